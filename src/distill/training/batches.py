"""Batch sources: where each optimizer step's sequences come from. The loop asks for one step at a time.

    micro_batches(step) -> list[Batch]        this process's micro-batches of optimizer step `step`
    state_dict() / load_state_dict(state)     what a checkpoint must hold to continue exactly

The loop counts the valid targets of the batches a source actually formed and sums that count over processes (one
all-reduce), so a source that makes sequences at run time — student samples, teacher generations — is normalised
exactly like the fixed data set: one division by the global count, whatever the lengths turned out to be.

Today's source is the seeded data-set plan. A run-time source keeps its random state in the process RNG (saved in
every checkpoint) or in its own `state_dict`.
"""

from __future__ import annotations

from typing import Any, Protocol

from distill.data.batch import Batch
from distill.data.dataset import BatchPlan, TokenizedData
from distill.errors import CheckpointError


class BatchSource(Protocol):
    def micro_batches(self, step: int) -> list[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class DatasetBatches:
    """The fixed, tokenized data set walked by the seeded `BatchPlan`: a pure function of (seed, step), so its state
    is only where it stands, and 1 process or N see the same global batches. Each batch carries its example
    indices (a teacher cache is keyed by them)."""

    kind = "dataset_plan"

    def __init__(self, data: TokenizedData, plan: BatchPlan, process_index: int, pad_id: int):
        self.data, self.plan, self.rank, self.pad_id = data, plan, process_index, pad_id
        self.next_step = 0

    def micro_batches(self, step: int) -> list[Batch]:
        self.next_step = step + 1
        return [Batch.of([self.data.examples[i] for i in indices], self.pad_id, indices)
                for indices in self.plan.micro_indices(step, self.rank)]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.plan.seed, "n_examples": self.plan.n,
                "batch_size": self.plan.batch_size, "next_step": self.next_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where the checkpoint stood; refuse one taken over another data set or plan (the recipe check
        catches a changed recipe first; this catches data that changed under the same recipe)."""
        mine = self.state_dict()
        for key in ("kind", "seed", "n_examples", "batch_size"):
            if state.get(key) != mine[key]:
                raise CheckpointError(f"the checkpoint's batches came from a plan with {key} {state.get(key)!r}, "
                                      f"this run's has {mine[key]!r}: the data changed since the checkpoint. "
                                      "Resume with the same data, or start over with --overwrite")
        self.next_step = int(state["next_step"])
