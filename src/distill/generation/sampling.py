"""How one token is drawn, so that a row's text depends only on its own key — never on the batch it ran in.

Each row carries its own `torch.Generator`, seeded from a hash of its key (for `distill generate`: the recipe's seed,
the prompt's id and the sample's index) and advanced by exactly one uniform draw per generated token. The token is
then read off the inverse CDF of the row's distribution, its tokens sorted by probability (ties by id:
`losses/choice.py`, shared with HPD's per-position draw). Neither the
batch size, nor which other rows share the batch, nor a resume touches the stream or the order, so the same key gives
the same text. What remains is arithmetic: a batched forward pass can differ from a lone one in the last bits of
fp32, which moves a token only when the uniform lands within that rounding of a boundary between two tokens'
cumulative mass (about one token in 10⁶–10⁷ on a CPU; tested at batch sizes 1 and 8 on tiny models).

Sorting by probability also makes `top_p` (nucleus) a prefix of the same order: the smallest set of most likely
tokens whose mass reaches `top_p`, renormalised.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """One row's generation settings. `temperature` 0 means greedy (argmax, no draw used)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # generation ends when the decoded text contains one; the text is cut before it
    logprobs: int | None = None  # None: none; 0: the chosen token's log-prob; k > 0: also the top-k alternatives

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 0:
            raise ValueError(f"invalid sampling settings {self}")


def row_generator(key: tuple[int, ...]) -> torch.Generator:
    """A CPU generator whose stream depends only on `key` (a tuple of ints), not on Python's hash seed."""
    digest = hashlib.sha256(",".join(str(int(k)) for k in key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def draw_uniforms(generators: list[torch.Generator]) -> torch.Tensor:
    """One uniform in [0, 1) per row, each from its own stream: shape [rows], float64."""
    return torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])


def top_logprobs(logprobs: torch.Tensor, chosen: torch.Tensor, k: int) -> tuple[list[float], list[list[tuple[int,
                                                                                                            float]]]]:
    """The chosen tokens' log-probs and, when k > 0, each row's top-k (id, log-prob), best first."""
    picked = logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
    if k <= 0:
        return picked, [[] for _ in picked]
    values, ids = logprobs.topk(k, dim=-1)
    return picked, [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
