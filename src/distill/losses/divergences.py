"""Divergences between a teacher distribution P and a student distribution Q over the vocabulary.

These are the plain reference implementations: they take full logits of shape (..., vocab) and return one value
per token. Faster, memory-lean paths are tested against them. The registry `DIVERGENCES` maps the recipe's
`objective.divergence` names to functions with the signature
`(student_logits, teacher_logits, temperature) -> per_token_values`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

TokenDivergence = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(P ‖ Q) per token, P = softmax(teacher / T), Q = softmax(student / T); mode-covering.

    Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", §2. Shapes: (..., V) → (...). Computed in
    fp32. Gradients flow to the student only when the teacher logits carry none (the teacher runs under no_grad).
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(dim=-1)


DIVERGENCES: dict[str, TokenDivergence] = {"forward_kl": forward_kl}


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward_kl",
                     temperature: float = 1.0) -> torch.Tensor:
    try:
        fn = DIVERGENCES[kind]
    except KeyError:
        raise ValueError(f"unknown divergence {kind!r}; known: {', '.join(DIVERGENCES)}") from None
    return fn(student_logits, teacher_logits, temperature)


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward_kl", *,
               temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean divergence over valid tokens (`mask` True where a token counts; all count when None)."""
    values = token_divergence(student_logits, teacher_logits, kind, temperature)
    if mask is None:
        return values.mean()
    return values[mask].sum() / mask.sum().clamp(min=1)
