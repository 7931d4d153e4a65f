"""The functional API: a divergence between student logits and a teacher signal, per token or averaged."""

from __future__ import annotations

import torch

from distill.losses.divergences import DivergenceSpec, on_support
from distill.losses.sampled import check_sampled, sampled_forward_kl
from distill.losses.signals import SampledSignal, TopKSignal
from distill.losses.support import TopKMode, support

Teacher = torch.Tensor | TopKSignal | SampledSignal  # dense logits, or a partial signal


def token_divergence(student_logits: torch.Tensor, teacher: Teacher, kind: str = "forward_kl", *,
                     temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1, mu: float = 0.5,
                     normalized: bool = False, topk_mode: TopKMode = "tail") -> torch.Tensor:
    """The divergence at every position: student_logits (..., V), teacher dense logits (..., V) or a `TopKSignal`
    with leading shape (...), or a `SampledSignal` (forward KL only: its unbiased estimate, `losses/sampled.py`);
    returns (...). See `DivergenceSpec` for the parameters."""
    spec = DivergenceSpec(kind=kind, beta=beta, alpha=alpha, mu=mu, normalized=normalized)
    if isinstance(teacher, SampledSignal):
        check_sampled(teacher, spec, temperature)
        return sampled_forward_kl(student_logits, teacher, temperature)
    return on_support(*support(student_logits, teacher, temperature, topk_mode), spec)


def divergence(student_logits: torch.Tensor, teacher: Teacher, kind: str = "forward_kl", *,
               temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1, mu: float = 0.5,
               normalized: bool = False, topk_mode: TopKMode = "tail", mask: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Mean divergence over valid tokens (`mask`: True or 1 where a token counts, of the leading shape; every token
    when None). Integer and float 0/1 masks (as TRL, torchtune and DistillKit take) mean the same as booleans."""
    values = token_divergence(student_logits, teacher, kind, temperature=temperature, beta=beta, alpha=alpha, mu=mu,
                              normalized=normalized, topk_mode=topk_mode)
    if mask is None:
        return values.mean()
    mask = as_bool_mask(mask, values.shape)
    return values[mask].sum() / mask.sum().clamp(min=1)


def as_bool_mask(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A boolean mask of `shape` from a boolean or 0/1 mask; anything else would be read as indices, so refuse it."""
    if mask.shape != shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, the tokens have {tuple(shape)}")
    if mask.dtype == torch.bool:
        return mask
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must be boolean or hold only 0 and 1 (1 = the token counts)")
    return mask != 0
