"""Evaluation during training: the student on held-out sequences every `training.eval_every` steps, the best one
kept, and early stopping.

The metrics are the cheap ones `distill eval` also reports, per target token over the whole validation set:
`val_nll` (the student's cross-entropy with the data), and with a live teacher `val_agreement` (the student's
top-1 token is the teacher's) and `val_kl` (KL(teacher ‖ student) at temperature 1). Each process scores every
N-th sequence and the sums are reduced, so the numbers do not depend on the number of processes. Evaluation draws
no random numbers (the student is in eval mode, greedy argmax only), so a resumed run logs the same values; the
best value and the evaluations since it live in the checkpoint's state, so `keep_best` and early stopping resume
exactly too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from distill.atomic import write_folder
from distill.data.batch import Batch, shifted_targets
from distill.data.formatting import Example
from distill.results.layout import BEST_JSON
from distill.results.metrics import HIGHER_IS_BETTER
from distill.teachers.sharding import is_sharded


@dataclass
class Validator:
    examples: Sequence[Example]  # a list, or a memory-mapped TokenStore
    micro_batch_size: int
    pad_id: int

    @torch.no_grad()
    def evaluate(self, accelerator: Accelerator, student: torch.nn.Module, teacher: Any | None) -> dict[str, float]:
        """The metrics over every validation sequence; `teacher`: a live teacher model, or None."""
        rank, world = accelerator.process_index, accelerator.num_processes
        mine = self.examples[rank::world]
        sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # nll, agree, kl, targets
        was_training = student.training
        student.eval()
        # every process makes as many passes as the busiest (rank 0): a sharded teacher (teacher.shard) gathers its
        # layers in each forward, which every process must join; a process out of sequences runs it on a sequence
        # it does not score
        busiest = math.ceil(len(self.examples) / world)
        passes = math.ceil(busiest / self.micro_batch_size)
        try:
            for first in range(0, passes * self.micro_batch_size, self.micro_batch_size):
                if first >= len(mine):
                    if teacher is not None and is_sharded(teacher):
                        teacher(**Batch.of([self.examples[0]], self.pad_id).to(accelerator.device).model_inputs())
                    continue
                batch = Batch.of(mine[first:first + self.micro_batch_size], self.pad_id).to(accelerator.device)
                targets, valid = shifted_targets(batch.labels)
                logits = student(**batch.model_inputs()).logits[:, :-1][valid].float()
                log_q = torch.log_softmax(logits, dim=-1)
                sums[0] += -log_q.gather(-1, targets[valid].unsqueeze(-1)).sum().double()
                sums[3] += valid.sum()
                if teacher is not None:
                    t_logits = teacher(**batch.model_inputs()).logits[:, :-1][valid].float()[:, :logits.shape[-1]]
                    log_p = torch.log_softmax(t_logits, dim=-1)
                    sums[1] += (log_q.argmax(-1) == log_p.argmax(-1)).sum()
                    sums[2] += (log_p.exp() * (log_p - log_q)).sum().double()
        finally:
            student.train(was_training)
        nll, agree, kl, n = accelerator.reduce(sums, reduction="sum").tolist()
        metrics = {"val_nll": nll / n}
        if teacher is not None:
            metrics.update(val_agreement=agree / n, val_kl=kl / n)
        return metrics


@dataclass
class BestTracker:
    """The best value of `metric` so far, its step, and the evaluations since (the checkpoint's `validation`)."""

    metric: str
    best: float | None = None
    best_step: int | None = None
    since_best: int = 0

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record an evaluation; True when it is a new best (strictly better)."""
        value = metrics.get(self.metric)
        if value is None:
            raise ValueError(f"training.keep_best: {self.metric} is not measured here (it needs a live teacher)")
        sign = -1.0 if self.metric in HIGHER_IS_BETTER else 1.0
        if not math.isfinite(value):  # a NaN is never a best: it would stay one for good (every comparison fails)
            self.since_best += 1
            return False
        if self.best is None or sign * value < sign * self.best:
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best": self.best, "best_step": self.best_step, "since_best": self.since_best}

    @classmethod
    def from_state(cls, metric: str, state: dict[str, Any] | None) -> BestTracker:
        if not state or state.get("metric") != metric:
            return cls(metric)
        best = state.get("best")
        return cls(metric, None if best is None or not math.isfinite(best) else best, state.get("best_step"),
                   int(state.get("since_best", 0)))


def save_best(folder: Path, student: Any, tokenizer: Any, tracker: BestTracker) -> None:
    """The best student so far as a plain Hugging Face folder, with best.json (metric, value, step)."""
    with write_folder(folder) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / BEST_JSON).write_text(json.dumps({"metric": tracker.metric, "value": tracker.best,
                                                 "step": tracker.best_step}) + "\n")


def teacher_model_of(source: Any) -> Any | None:
    """The live teacher model behind a teacher source, for the teacher metrics; None for a cache or an API."""
    from distill.teachers.source import LiveTeacher

    return source.model if isinstance(source, LiveTeacher) else None
