"""What a trace is worth to a student, estimated without training on it: The Distillation Game's adaptive student.

Allouah, Haghifam, Koyejo & Shokri (2026, arXiv 2605.22737) let the thief hold a few clean held-out traces. With g the
gradient of the student's mean held-out loss L_H, one SGD step of size η on trace i changes L_H by
−η·⟨∇NLL_i, g⟩ to first order. The inner product is read off two forward passes, without any per-trace backward:

    v_i = (NLL_i(θ + ε·g) − NLL_i(θ − ε·g)) / (2ε)  ≈  ⟨∇NLL_i, g⟩

so v_i > 0 means a step on trace i *lowers* the held-out loss (the trace helps); a poisoned trace (antidistillation
picks tokens whose gradient raises the proxy's held-out loss) has v_i < 0. NLL_i is the trace's mean NLL over its
completion tokens, as in the authors' code.

Sign convention, checked against the authors' public code (github ysfalh/distillation-game, train/distill.py): their
raw weight is a_i = (NLL_i(θ − εg) − NLL_i(θ + εg)) / (2ε) = −v_i, turned into w_i = exp(β_s·clip(a_i, ±10)) with
β_s = 1 in every published config. Read literally that up-weights traces that *raise* the held-out loss; we weight by
exp(β·v) (the descent direction) and `bench/defense_game.py` can run the literal sign as its own arm
(`sign=-1`) so the difference is measured rather than argued. Departures: values are standardised (z-scores) before
the exponential, so β means the same for any model size and ε (the authors clip raw values at ±10, which depends on
the gradient's scale); the weights act by seeded resampling of the training rows (`students.py`), which is unbiased
for the weighted loss, instead of a weighted loss inside the trainer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from distill.data.batch import collate, shifted_targets
from distill.data.formatting import Example


def completion_nll(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8) -> torch.Tensor:
    """Each example's mean NLL over its labelled (completion) tokens, as float64 [N]; keeps the graph when grad is
    enabled (for `mean_gradient`)."""
    out = []
    for first in range(0, len(examples), batch_size):
        batch = collate(list(examples[first:first + batch_size]), pad_id)
        device = next(model.parameters()).device
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float()
        targets, valid = shifted_targets(batch["labels"].to(device))
        token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
        out.append((token_nll * valid).sum(-1) / valid.sum(-1).clamp_min(1))
    return torch.cat(out)


def mean_gradient(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8,
                  progress: Any = None) -> dict[str, torch.Tensor]:
    """∇ of the mean over examples of each one's mean completion NLL, per trainable parameter (in its dtype)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the same function the finite difference probes
    try:
        for first in range(0, len(examples), batch_size):
            chunk = list(examples[first:first + batch_size])
            model.zero_grad(set_to_none=True)
            (completion_nll(model, chunk, pad_id, batch_size).sum() / len(examples)).backward()
            for name, p in params.items():
                if p.grad is not None:
                    total[name] += p.grad
            if progress is not None:
                progress(len(chunk))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return total


@contextmanager
def shifted(model: Any, direction: dict[str, torch.Tensor], scale: float) -> Iterator[None]:
    """The model with θ + scale·direction for the duration; restored exactly (the shift is subtracted from a saved
    copy, not undone arithmetically, so no rounding drift accumulates)."""
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name in direction}
    try:
        with torch.no_grad():
            for name, d in direction.items():
                params[name].add_(d.to(params[name].dtype), alpha=scale)
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def trace_values(model: Any, examples: Sequence[Example], gradient: dict[str, torch.Tensor], pad_id: int,
                 eps: float = 1e-3, batch_size: int = 8) -> list[float]:
    """v_i ≈ ⟨∇NLL_i, g⟩ by the central difference along g (module docstring): positive = helps the held-out loss.
    `eps` is relative to g's norm (the step is eps·g/‖g‖), so it means the same whatever the gradient's scale."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gradient.values())).item()
    if norm == 0:
        return [0.0] * len(examples)
    step = eps / norm
    with torch.no_grad():
        with shifted(model, gradient, step):
            plus = completion_nll(model, examples, pad_id, batch_size).double()
        with shifted(model, gradient, -step):
            minus = completion_nll(model, examples, pad_id, batch_size).double()
    return ((plus - minus) / (2 * step)).tolist()
