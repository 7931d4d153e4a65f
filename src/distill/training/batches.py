"""Batch sources: where each optimizer step's sequences come from. The loop asks for one step at a time.

    micro_batches(step) -> list[Batch]        this process's micro-batches of optimizer step `step`
    state_dict() / load_state_dict(state)     what a checkpoint must hold to continue exactly
    logged: tuple[str, ...]                   names of the sums each batch reports in `Batch.logged` for the logs

The loop counts the valid targets of the batches a source actually formed and sums that count over processes (one
all-reduce), so a source that makes sequences at run time — student samples, teacher generations — is normalised
exactly like the fixed data set: one division by the global count, whatever the lengths turned out to be.

The sources: the seeded data-set plan (here) and the on-policy source that has the student complete a share of its
rows (`training/student_samples.py`). A checkpoint keeps the main process's `state_dict`, so it must be the
same on every process; what differs per process (the random state a sampling source draws from) lives in the
process RNG, which every checkpoint saves per process.
"""

from __future__ import annotations

from typing import Any, Protocol

from distill.data.batch import Batch
from distill.data.dataset import BatchPlan, TokenizedData
from distill.errors import CheckpointError


class BatchSource(Protocol):
    logged: tuple[str, ...]

    def micro_batches(self, step: int) -> list[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class DatasetBatches:
    """The fixed, tokenized data set walked by the seeded `BatchPlan`: a pure function of (seed, step), so its state
    is only where it stands, and 1 process or N see the same global batches. Each batch carries its example
    indices (a teacher cache is keyed by them)."""

    kind = "dataset_plan"
    logged: tuple[str, ...] = ()

    def __init__(self, data: TokenizedData, plan: BatchPlan, process_index: int, pad_id: int):
        self.data, self.plan, self.rank, self.pad_id = data, plan, process_index, pad_id
        self.next_step = 0

    def micro_batches(self, step: int) -> list[Batch]:
        self.next_step = step + 1
        return [Batch.of([self.data.examples[i] for i in indices], self.pad_id, indices)
                for indices in self.plan.micro_indices(step, self.rank)]

    def upcoming(self, step: int) -> list[list[int]]:
        """The example indices of this process's micro-batches at `step`, without moving on: what a teacher cache
        may decode ahead of time."""
        return self.plan.micro_indices(step, self.rank)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.plan.seed, "n_examples": self.plan.n,
                "batch_size": self.plan.batch_size, "next_step": self.next_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where the checkpoint stood. The plan is the recipe's (the resume already refused another
        recipe), so only a state of another kind of source is refused here. `n_examples` is recorded but not
        compared: data that changed under the same recipe resumed before this interface existed, and still does."""
        if state.get("kind") != self.kind or not isinstance(state.get("next_step"), int):
            raise CheckpointError(f"the checkpoint's batch source state {state!r} is not that of a data-set plan; "
                                  "it was written by another kind of run. Start over with --overwrite")
        self.next_step = state["next_step"]
