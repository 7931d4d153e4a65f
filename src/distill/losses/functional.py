"""The functional API: a divergence between student logits and a teacher signal, per token or averaged."""

from __future__ import annotations

import torch

from distill.losses.divergences import DivergenceSpec, on_support
from distill.losses.support import TopKMode, support
from distill.teachers.signal import TopKSignal


def token_divergence(student_logits: torch.Tensor, teacher: torch.Tensor | TopKSignal, kind: str = "forward_kl", *,
                     temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1, mu: float = 0.5,
                     normalized: bool = False, topk_mode: TopKMode = "tail") -> torch.Tensor:
    """The divergence at every position: student_logits (..., V), teacher dense logits (..., V) or a `TopKSignal`
    with leading shape (...); returns (...). See `DivergenceSpec` for the parameters."""
    spec = DivergenceSpec(kind=kind, beta=beta, alpha=alpha, mu=mu, normalized=normalized)
    return on_support(*support(student_logits, teacher, temperature, topk_mode), spec)


def divergence(student_logits: torch.Tensor, teacher: torch.Tensor | TopKSignal, kind: str = "forward_kl", *,
               temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1, mu: float = 0.5,
               normalized: bool = False, topk_mode: TopKMode = "tail", mask: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Mean divergence over valid tokens (`mask` True where a token counts; every token when None)."""
    values = token_divergence(student_logits, teacher, kind, temperature=temperature, beta=beta, alpha=alpha, mu=mu,
                              normalized=normalized, topk_mode=topk_mode)
    if mask is None:
        return values.mean()
    return values[mask].sum() / mask.sum().clamp(min=1)
