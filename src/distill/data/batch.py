"""A batch of token sequences, as every batch source makes them and every teacher source and objective reads them.

Rows are right-padded; `labels` is −100 where nothing is predicted (padding, prompts, non-assistant turns). The
shift lives here, once: the state at position t predicts the token at t + 1, so the valid *targets* are
`labels[:, 1:] != −100`, and every per-token signal is laid out in `[:, :-1][valid]` order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from distill.data.formatting import IGNORE_INDEX, Example


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of attention and labels. When the examples carry
    `position_ids` (packed documents that must not see each other) they come along, and a row's padding is one more
    segment of its own (positions from 0): later than every real token, so no real token attends to it."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    segmented = any(e.position_ids is not None for e in examples)
    position_ids = torch.zeros((len(examples), width), dtype=torch.long) if segmented else None
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention_mask[row, :n] = 1
        if position_ids is not None:
            position_ids[row, :n] = torch.tensor(e.position_ids if e.position_ids is not None else range(n))
            position_ids[row, n:] = torch.arange(width - n)
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    return out | ({"position_ids": position_ids} if position_ids is not None else {})


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for positions 0 … L−2 (each predicts the next token) and the mask of valid ones."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


@dataclass
class Batch:
    """Sequences (B, L) with their labels. `examples`: the data set's indices of the rows, when they come from a
    fixed data set (a teacher cache is keyed by them); None for sequences made at run time. `draws`: one uniform in
    [0, 1) per position (B, L), float64, from each row's own random stream, for objectives that draw a token at every
    position (HPD); laid out like the ids, so `draws[:, :-1][valid]` lines up with the targets.
    `logged`: sums over the batch its source reports for the logs (named in the source's `logged`), divided by the
    step's target count like every logged term: e.g. the targets the student wrote, whose mean is their share."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    examples: list[int] | None = None
    draws: torch.Tensor | None = None
    logged: dict[str, float] = field(default_factory=dict)
    position_ids: torch.Tensor | None = None  # packed documents that must not see each other (see `collate`)

    @classmethod
    def of(cls, examples: list[Example], pad_id: int, indices: list[int] | None = None) -> Batch:
        return cls(**collate(examples, pad_id), examples=indices)

    def to(self, device: torch.device | str) -> Batch:
        return replace(self, input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device),
                       labels=self.labels.to(device), draws=None if self.draws is None else self.draws.to(device),
                       position_ids=None if self.position_ids is None else self.position_ids.to(device))

    def model_inputs(self) -> dict[str, torch.Tensor | None]:
        """What a model's forward takes. With `position_ids` the attention mask is left out: transformers builds a
        block-diagonal causal mask from positions that restart (only when no 2-D mask is given), so no token
        attends across a document boundary."""
        if self.position_ids is None:
            return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        return {"input_ids": self.input_ids, "attention_mask": None, "position_ids": self.position_ids}

    def targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, valid) of the shifted positions: see `shifted_targets`."""
        return shifted_targets(self.labels)

    def n_targets(self) -> int:
        """Valid target positions: what the loss is summed over and, over the whole step, divided by."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def n_tokens(self) -> int:
        """Input tokens (padding excluded), for throughput."""
        return int(self.attention_mask.sum())
