"""Forward KL from a sampled teacher signal: an unbiased estimate of the dense loss's gradient.

A sampled cache (Anshumann et al., "Sparse Logit Sampling", ACL 2025) stores, per position, a few tokens drawn from
the teacher with Horvitz–Thompson weights w_j (`SampledSignal`): E[Σ_j w_j · e_{x_j}] = p, the teacher's
distribution. Forward KL is linear in p,

    KL(P ‖ Q) = Σ_v p_v (log p_v − log q_v),   ∂/∂s KL = q − p   (s = z / T, q = softmax(s)),

so replacing p by the weighted draws gives estimates whose expectations are exact:

    value     K̂ = Σ_j w_j (log p_{x_j} − log q_{x_j})             E[K̂] = KL(P ‖ Q)
    gradient  ĝ = (Σ_j w_j) · q − Σ_j w_j · e_{x_j}                E[ĝ] = q − p

With the proposal the teacher itself (t = 1) the weights are the draw frequencies, Σ w = 1, and ĝ = q − p̂ with p̂
the empirical distribution of N draws: Cov[ĝ] = (diag(p) − p pᵀ) / N, so the gradient's total variance per
position is (1 − Σ_v p_v²) / N — small where the teacher is confident, and shrinking as 1/N. A flatter proposal
(t > 1) reaches further into the tail at the cost of weights that no longer sum to 1 (Var ŵ_v = (p_v² / r_v −
p_v²) / N). Top-k has no such guarantee: it drops the tail and, renormalised or bucketed, biases every
gradient (what issue 15 measured: a k = 64 student worse than the live teacher's).

The estimator is unbiased only for losses linear in p, so only forward KL (and JSD with β = 0, the same thing)
accepts a sampled signal; reverse-type divergences need p at tokens the student prefers, which the draws may not
hold. Temperature: the draws are at the capture temperature and cannot be re-tempered without bias, so the loss
temperature must equal it. `sampled_forward_kl` is the reference (autograd); `sampled_forward_kl_grad` the closed
form the chunked path uses; tests hold them together and hold both to the dense loss in expectation.
"""

from __future__ import annotations

import torch

from distill.losses.divergences import LOG_FLOOR, DivergenceSpec
from distill.losses.signals import SampledSignal


def sampled_problem(spec: DivergenceSpec | None, capture_temperature: float, temperature: float) -> str | None:
    """Why a sampled signal cannot stand in for the teacher in this loss, or None."""
    if spec is not None and not spec.is_forward_kl:
        return (f"a sampled teacher signal estimates forward KL only (the loss must be linear in the teacher's "
                f"distribution to stay unbiased), not {spec.kind}; use objective.divergence: forward_kl, or a top-k "
                "cache or a live teacher")
    if capture_temperature != temperature:
        return (f"the teacher's tokens were drawn at temperature {capture_temperature:g}, the loss is at "
                f"{temperature:g}; draws cannot be re-tempered without bias. Capture at the loss temperature")
    return None


def check_sampled(signal: SampledSignal, spec: DivergenceSpec | None, temperature: float) -> None:
    problem = sampled_problem(spec, signal.capture_temperature, temperature)
    if problem:
        raise ValueError(problem)


def _estimate(log_q: torch.Tensor, signal: SampledSignal) -> torch.Tensor:
    """K̂ per position: Σ_j w_j (log p_j − log q_j), given the student's log_softmax(s) over the vocabulary."""
    log_q_drawn = log_q.gather(-1, signal.ids.long()).clamp(min=LOG_FLOOR)
    return (signal.weights.float() * (signal.logprobs.float() - log_q_drawn)).sum(-1)


def sampled_forward_kl(student_logits: torch.Tensor, signal: SampledSignal, temperature: float) -> torch.Tensor:
    """K̂ per position (...) with q = softmax(student_logits / T), differentiable."""
    check_sampled(signal, None, temperature)
    return _estimate(torch.log_softmax(student_logits.float() / temperature, dim=-1), signal)


def sampled_forward_kl_grad(log_q: torch.Tensor, signal: SampledSignal) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ K̂, ∂ΣK̂/∂s) in closed form, given the student's log_softmax(s) (N, V) with s = z / T: ĝ = (Σ w) · q −
    scatter(w). Padding has weight 0 and adds nothing."""
    weights = signal.weights.float()
    grad = log_q.exp().mul_(weights.sum(-1, keepdim=True))
    return _estimate(log_q, signal).sum(), grad.scatter_add_(-1, signal.ids.long(), -weights)
