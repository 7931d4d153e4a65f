"""Divergences between a teacher distribution P and a student distribution Q — the reference implementations.

Every kind is written once, over log-probabilities on a common *support* (the last dimension): the full vocabulary
for a dense teacher, the teacher's top-k tokens, or the top-k plus one tail bucket (see `losses/support.py`).
Inputs `log_p`, `log_q` have shape (..., S) and are normalised over S; the result has shape (...), one value per
token. Everything runs in fp32. Zero-probability entries (log = −inf, e.g. an empty tail bucket) contribute 0 and
give finite gradients.

Conventions: P is the teacher, Q the student. "Forward" KL is KL(P ‖ Q) (mode-covering: Q must put mass wherever P
does); "reverse" KL is KL(Q ‖ P) (mode-seeking: Q may concentrate on P's main modes). The loss temperature is applied
before these functions (both distributions softened by the same T); the T² factor of Hinton's loss is the
objective's business, not the divergence's. Formulas and references: docs/losses.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.losses.names import DIVERGENCES, Divergence

# the names are written once, in losses/names.py (torch-free, so the recipe schema can import them)
Kind = Divergence
KINDS = DIVERGENCES

# log-probabilities below this are zero in fp32 anyway; clamping keeps 0 · (−inf − −inf) out of values and gradients
LOG_FLOOR = -1.0e4


@dataclass(frozen=True)
class DivergenceSpec:
    """Which divergence, with its parameters. `beta` weights reverse KL in `jsd` and `interpolated_kl`; `alpha` is
    the skew of `skew_kl` / `skew_reverse_kl` (DistiLLM's α); `mu` is AKL's head mass; `normalized` divides `jsd`
    by β(1 − β) so it moves continuously from forward KL (β = 0) to reverse KL (β = 1)."""

    kind: Kind = "forward_kl"
    beta: float = 0.5
    alpha: float = 0.1
    mu: float = 0.5
    normalized: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown divergence {self.kind!r}; known: {', '.join(KINDS)}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha (skew) must be in [0, 1), got {self.alpha}")
        if not 0.0 < self.mu <= 1.0:
            raise ValueError(f"mu must be in (0, 1], got {self.mu}")

    @property
    def is_forward_kl(self) -> bool:
        """Forward KL, under its own name or as JSD with β = 0: the divergence linear in the teacher's P."""
        return self.kind == "forward_kl" or (self.kind == "jsd" and self.beta == 0.0)


def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(A ‖ B) = Σ a · (log a − log b) over the last dimension."""
    return (log_a.exp() * (log_a.clamp(min=LOG_FLOOR) - log_b.clamp(min=LOG_FLOOR))).sum(-1)


def log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w · A + (1 − w) · B), computed stably in log space."""
    if weight_a <= 0.0:
        return log_b
    if weight_a >= 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q): Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""
    return kl(log_p, log_q)


def reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(Q ‖ P): MiniLLM (Gu et al. 2024), mode-seeking."""
    return kl(log_q, log_p)


def jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float, normalized: bool = False) -> torch.Tensor:
    """Generalized JSD(β) as GKD (Agarwal et al. 2024, eq. 1) and TRL define it, with M = β·P + (1 − β)·Q:

        JSD(β) = β · KL(P ‖ M) + (1 − β) · KL(Q ‖ M),   β = 0 → KL(P ‖ Q),   β = 1 → KL(Q ‖ P)

    The endpoints are special cases: for β strictly inside (0, 1) the value shrinks toward 0 as β nears either end
    (≈ β · KL(P ‖ Q) near 0). With `normalized`, JSD(β) / (β(1 − β)) instead tends to KL(P ‖ Q) at 0 and KL(Q ‖ P)
    at 1, continuously."""
    if beta == 0.0:
        return kl(log_p, log_q)
    if beta == 1.0:
        return kl(log_q, log_p)
    log_m = log_mixture(log_p, log_q, beta)
    value = beta * kl(log_p, log_m) + (1.0 - beta) * kl(log_q, log_m)
    return value / (beta * (1.0 - beta)) if normalized else value


def interpolated_kl(log_p: torch.Tensor, log_q: torch.Tensor, beta: float) -> torch.Tensor:
    """β · KL(Q ‖ P) + (1 − β) · KL(P ‖ Q)."""
    return beta * kl(log_q, log_p) + (1.0 - beta) * kl(log_p, log_q)


def tvd(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ |p − q|, bounded in [0, 1] (Wen et al. 2023, f-divergence sequence KD)."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def skew_kl(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-skew KL of DistiLLM (Ko et al. 2024): KL(P ‖ α·P + (1 − α)·Q); α = 0 is forward KL."""
    return kl(log_p, log_mixture(log_p, log_q, alpha))


def skew_reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-skew reverse KL of DistiLLM: KL(Q ‖ α·Q + (1 − α)·P); α = 0 is reverse KL."""
    return kl(log_q, log_mixture(log_q, log_p, alpha))


def akl_weights(log_p: torch.Tensor, log_q: torch.Tensor, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """AKL's weights (Wu et al. 2024, "Rethinking KL Divergence in Knowledge Distillation for LLMs").

    Sort the teacher's probabilities; the head is the top tokens until their cumulative mass exceeds `mu` (at least
    one token), the tail the rest. The weights are the shares of Σ|p − q| that fall in head and tail; they are
    constants for the gradient, as in the authors' code. The cumulative mass is divided by its last entry: in fp32 it
    can end an ulp above 1, which at μ = 1 would put the last tokens in the tail (AKL at μ = 1 is forward KL)."""
    with torch.no_grad():
        p, q = log_p.exp(), log_q.exp()
        p_sorted, order = p.sort(dim=-1, descending=True)
        gap = (p_sorted - q.gather(-1, order)).abs()
        cumulative = p_sorted.cumsum(-1)
        tail = cumulative / cumulative[..., -1:].clamp(min=torch.finfo(cumulative.dtype).tiny) > mu
        tail[..., 0] = False
        g_head = gap.masked_fill(tail, 0.0).sum(-1)
        g_tail = gap.masked_fill(~tail, 0.0).sum(-1)
        total = (g_head + g_tail).clamp(min=torch.finfo(gap.dtype).tiny)
        return g_head / total, g_tail / total


def akl(log_p: torch.Tensor, log_q: torch.Tensor, mu: float = 0.5) -> torch.Tensor:
    """Adaptive KL: head-weighted forward KL plus tail-weighted reverse KL (weights from `akl_weights`)."""
    w_head, w_tail = akl_weights(log_p, log_q, mu)
    return w_head * kl(log_p, log_q) + w_tail * kl(log_q, log_p)


def on_support(log_p: torch.Tensor, log_q: torch.Tensor, spec: DivergenceSpec) -> torch.Tensor:
    """The divergence `spec` between two distributions given as log-probabilities over the same support."""
    match spec.kind:
        case "forward_kl":
            return forward_kl(log_p, log_q)
        case "reverse_kl":
            return reverse_kl(log_p, log_q)
        case "jsd":
            return jsd(log_p, log_q, spec.beta, spec.normalized)
        case "interpolated_kl":
            return interpolated_kl(log_p, log_q, spec.beta)
        case "tvd":
            return tvd(log_p, log_q)
        case "skew_kl":
            return skew_kl(log_p, log_q, spec.alpha)
        case "skew_reverse_kl":
            return skew_reverse_kl(log_p, log_q, spec.alpha)
        case "akl":
            return akl(log_p, log_q, spec.mu)
    raise AssertionError(spec.kind)
