"""The objective contract: a batch and the teacher's signal in, loss pieces out.

    objective(batch, signal) -> LossPieces(total, count, terms)

`total` is a *sum* over the batch's valid targets and carries the graph; `count` is how many targets it summed
over; `terms` are named detached sums for logging (for the off-policy objective: `ce` and `kd`). The loop sums
every term over micro-batches and processes and divides each once by the global count (never averages inside an
objective), so accumulation and process count do not change the loss. A new method is a new objective with its own
terms — the loop logs whatever comes back.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from distill.data.batch import Batch
from distill.losses.signals import TeacherSignal


class LossPieces(NamedTuple):
    """A NamedTuple, so that accelerate's output conversion and DDP see through it like any tuple."""

    total: torch.Tensor
    count: torch.Tensor
    terms: dict[str, torch.Tensor]

    def as_dict(self) -> dict[str, torch.Tensor]:
        """{"total", each term, "n_targets"}: the flat form scripts and tests read."""
        return {"total": self.total, **self.terms, "n_targets": self.count}


class Objective(Protocol):
    """An `nn.Module` that owns the student (so that under DDP the whole loss runs inside the wrapped forward)."""

    def __call__(self, batch: Batch, signal: TeacherSignal | None) -> LossPieces: ...
