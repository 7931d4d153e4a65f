"""The optimizer (`make_optimizer`) and the learning-rate schedule: linear warm-up, cosine decay to `min_lr_ratio`,
and what happens when a resumed run is given a new `max_steps`.

A schedule is a list of segments. The first is the recipe's warm-up + cosine over `[0, max_steps]`. Extending a run
(`--resume` with another `max_steps`) appends one that starts at the resumed step:
- while the rate is still decaying, it *continues* smoothly: a cosine from the current rate down to the minimum at
  the new last step (no jump: the rate at the resumed step is the one the old schedule gave it);
- once it has reached the minimum (a finished run), continuing would train at the minimum — at 0 by default, so not
  at all — and the extension is a *warm restart* (Loshchilov & Hutter 2017, SGDR): the recipe's warm-up (at most half
  the extension) back to the peak, then a cosine down to the minimum at the new last step.
Evaluating the old cosine at the new length instead (what re-creating the usual schedule does) made the rate jump:
a finished 100-step run extended to 200 went from 0 at step 101 to about half the peak at step 102.

`Schedule` is a callable object, so `LambdaLR.state_dict()` stores its segments with the scheduler: a resume of an
extended run rebuilds exactly the same rates.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# a rate this close to the minimum has finished decaying
_FINISHED = 1e-9


class Schedule:
    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float):
        self.min_ratio = min_ratio
        # positions count scheduler steps (optimizer steps taken; fp16 steps the loss scaler skipped do not count);
        # `max_steps` is the recipe's value a segment was planned for
        self.segments: list[dict[str, Any]] = [
            {"start": 0, "end": max_steps, "warmup": warmup_steps, "peak": 1.0, "max_steps": max_steps}]

    def __call__(self, step: int) -> float:
        """The factor on the peak learning rate at optimizer step `step` (0-based: the rate step `step` uses)."""
        segment = next(s for s in reversed(self.segments) if s["start"] <= step)  # the first starts at 0
        local, warmup = step - segment["start"], segment["warmup"]
        if local < warmup:
            return segment["peak"] * local / warmup
        progress = min(1.0, (local - warmup) / max(1, segment["end"] - segment["start"] - warmup))
        return self.min_ratio + (segment["peak"] - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def planned_for(self) -> int:
        """The recipe's max_steps the last segment was planned for."""
        return self.segments[-1]["max_steps"]

    def extend(self, position: int, steps: int, max_steps: int, warmup_steps: int) -> str:
        """Re-plan from scheduler position `position` for `steps` more steps (to the recipe's new `max_steps`);
        returns "continues" or "restarts" (see the module doc)."""
        current, end = self(position), position + steps
        segment = {"start": position, "end": end, "max_steps": max_steps}
        if current - self.min_ratio > _FINISHED:
            self.segments.append({**segment, "warmup": 0, "peak": current})
            return "continues"
        self.segments.append({**segment, "warmup": min(warmup_steps, steps // 2), "peak": 1.0})
        return "restarts"


def make_optimizer(params, lr: float, betas: tuple[float, float], weight_decay: float, device: torch.device,
                   loss_scaler: bool = False) -> torch.optim.AdamW:
    """AdamW, fused where torch has a fused kernel for the device (CPU and CUDA): one pass over every parameter
    instead of torch's default multi-tensor (`foreach`) path, whose per-step temporaries are as large as the
    parameters. Same update rule (tests hold the two together); on this CPU the fused step of a 50M-parameter
    student takes ~0.10 s against ~0.29 s (bench/kd_step.py's profile). Other devices keep the default.

    Not with fp16's loss scaler (`loss_scaler`): a fused optimizer takes the overflow flag into its kernel, so the
    scaler always calls `step()` and accelerate can no longer tell a skipped step — the loop's skip accounting and
    its scheduler would see every overflow as a taken step."""
    fused = True if torch.device(device).type in ("cpu", "cuda") and not loss_scaler else None
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)


def keep_fused(optimizer: torch.optim.Optimizer, fused: bool | None) -> None:
    """Loading an optimizer's state restores each group's settings, `fused` included: a checkpoint written before
    the trainer fused (or by an unfused run) would silently turn it off. Put back what `make_optimizer` chose."""
    for group in optimizer.param_groups:
        group["fused"] = fused


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_ratio: float
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(warmup_steps, max_steps, min_ratio))


def schedule_of(scheduler: torch.optim.lr_scheduler.LambdaLR) -> Schedule:
    return scheduler.lr_lambdas[0]
