"""Score models on held-out documents and keep, per document, the *additive* statistics every metric is built from.

Why per-document sums: a metric such as held-out NLL is a ratio of sums (Σ nll / Σ tokens), and its confidence
interval must resample documents, not tokens (tokens within a document are not independent). Keeping one row of sums
per document lets the bootstrap compute any metric — including ECE, which is linear in per-bin sums, and paired
differences between models — from resampled column totals, without scoring again.

Token statistics are computed where the model predicts token t+1 from tokens ≤ t; the first token of a document is
context only. Agreement and KL need a *reference* model (the teacher) with the same vocabulary, scored on the same
tokens in the same batch.

Logits are cut to the tokenizer's size before the softmax, as training cuts them: a model's output may be wider than
its tokenizer (embedding matrices are padded to a round size), and the padding rows are no token at all. Left in,
they would take probability mass from real tokens (raising NLL, skewing confidence) and make two models padded to
different widths incomparable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from distill.data.formatting import IGNORE_INDEX
from distill.progress import progress as progress_display

ECE_BINS = 15
BASE_COLUMNS = ("tokens", "nll", "correct")
REFERENCE_COLUMNS = ("agree", "kl_forward", "kl_reverse")
BIN_COLUMNS = tuple(f"bin{b}_{kind}" for b in range(ECE_BINS) for kind in ("count", "confidence", "correct"))


def column_names(with_reference: bool) -> tuple[str, ...]:
    return BASE_COLUMNS + (REFERENCE_COLUMNS if with_reference else ()) + BIN_COLUMNS


@dataclass
class DocStats:
    """Per-document additive statistics of one model: `values[i, j]` is column `columns[j]` summed over the
    predicted tokens of document i."""

    columns: tuple[str, ...]
    values: np.ndarray  # (n_docs, len(columns)), float64

    def index(self, name: str) -> int:
        return self.columns.index(name)

    def has(self, name: str) -> bool:
        return name in self.columns

    def subset(self, rows: Sequence[int] | np.ndarray) -> DocStats:
        return DocStats(self.columns, self.values[np.asarray(rows, dtype=int)])

    @property
    def n_docs(self) -> int:
        return self.values.shape[0]


def token_stats(logp: torch.Tensor, targets: torch.Tensor, ref_logp: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token contributions to each column, shape (N, k), for N predicted tokens.

    `logp` (N, V) are the model's next-token log-probabilities, `targets` (N,) the true next tokens, `ref_logp`
    (N, V) the reference model's log-probabilities on the same positions (normalised once per batch by the caller,
    not once per compared model). KL is in nats: forward = KL(reference ‖ model), reverse = KL(model ‖ reference).
    Confidence is the model's top-1 probability; ECE bins are equal-width on [0, 1].
    """
    nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
    top_logp, top = logp.max(dim=-1)
    confidence = top_logp.exp()
    correct = (top == targets).double()
    pieces = [torch.ones_like(nll, dtype=torch.float64), nll.double(), correct]
    if ref_logp is not None:
        agree = (ref_logp.argmax(dim=-1) == top).double()
        kl_forward = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
        kl_reverse = (logp.exp() * (logp - ref_logp)).sum(-1)
        pieces += [agree, kl_forward.double(), kl_reverse.double()]
    bins = torch.clamp((confidence * ECE_BINS).long(), max=ECE_BINS - 1)
    one_hot = F.one_hot(bins, ECE_BINS).double()  # (N, B)
    per_bin = torch.stack([one_hot, one_hot * confidence.double()[:, None], one_hot * correct[:, None]], dim=-1)
    return torch.cat([torch.stack(pieces, dim=-1), per_bin.reshape(len(nll), -1)], dim=-1)


@dataclass
class ScoreResult:
    """`tokens_per_s` counts every input token a forward pass read (padding excluded), scored or not: the model does
    the same work for a chat's questions and markup as for its answers, so counting only scored tokens would make
    the same model look ~3x slower on chat than on text for the same compute. The scored tokens are counted apart."""

    stats: dict[str, DocStats]
    tokens_per_s: dict[str, float]  # scoring throughput: input tokens / seconds in the model's forward passes
    input_tokens: int = 0  # non-padding tokens fed to each model
    scored_tokens: int = 0  # of those, the predicted tokens the statistics are over


def score_documents(models: dict[str, torch.nn.Module], documents: Sequence[Sequence[int]], *,
                    labels: Sequence[Sequence[int]] | None = None, reference: str | None = None,
                    batch_size: int = 4, pad_token_id: int = 0,
                    vocab_size: int | None = None, device: str | torch.device = "cpu", progress: bool = True,
                    label: str = "score") -> ScoreResult:
    """Run every model over every document (teacher-forced) and return per-document statistics for each.

    Documents are batched in order with right padding; a document needs at least 2 tokens to predict one.
    `labels` (aligned with the documents, as in training) limit the scored tokens to those whose label is not
    IGNORE_INDEX — a chat's assistant turns, a completion; None scores every token after the first.
    `vocab_size` is the tokenizer's size (`len(tokenizer)`): every model's logits are cut to it before the softmax,
    so padded output rows carry no probability. None keeps every column (for models that are not padded).
    """
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models {list(models)}")
    order = [reference] * (reference is not None) + [name for name in models if name != reference]
    sums = {name: np.zeros((len(documents), len(column_names(name != reference and reference is not None))))
            for name in order}
    seconds = dict.fromkeys(order, 0.0)
    input_tokens = scored_tokens = 0
    for model in models.values():
        model.eval()
    bar = progress_display(label, disable=not progress)
    with bar, torch.inference_mode():
        task = bar.add_task(label, total=len(documents))
        for start in range(0, len(documents), batch_size):
            batch = documents[start:start + batch_size]
            width = max(len(d) for d in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, doc in enumerate(batch):
                ids[row, :len(doc)] = torch.tensor(doc)
                mask[row, :len(doc)] = 1
                scored[row, :len(doc)] = True if labels is None else \
                    torch.tensor(labels[start + row]) != IGNORE_INDEX
            ids, mask = ids.to(device), mask.to(device)
            valid = scored[:, 1:].to(device)
            targets = ids[:, 1:][valid]
            doc_of_token = (torch.arange(len(batch), device=device)[:, None].expand_as(valid))[valid]
            input_tokens += int(mask.sum())
            scored_tokens += int(valid.sum())
            ref_logp = None
            for name in order:
                began = time.perf_counter()
                logits = models[name](input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1][valid]
                seconds[name] += time.perf_counter() - began
                logp = F.log_softmax(logits[:, :vocab_size].float(), dim=-1)
                per_token = token_stats(logp, targets, ref_logp)
                if name == reference:  # scored first; every other model is compared with it
                    ref_logp = logp
                per_doc = torch.zeros(len(batch), per_token.shape[1], dtype=torch.float64, device=device)
                per_doc.index_add_(0, doc_of_token, per_token)
                sums[name][start:start + len(batch)] = per_doc.cpu().numpy()
            bar.update(task, advance=len(batch))
    stats = {name: DocStats(column_names(name != reference and reference is not None), sums[name])
             for name in order}
    return ScoreResult(stats, {name: input_tokens / max(seconds[name], 1e-9) for name in order}, input_tokens,
                       scored_tokens)
