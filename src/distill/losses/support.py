"""Put teacher and student on a common support, at the loss temperature, as normalised log-probabilities.

- dense teacher: the whole vocabulary; both are `log_softmax(logits / T)`.
- top-k, `renormalize`: the k teacher tokens are treated as the whole distribution; teacher and student are both
  renormalised over them.
- top-k, `tail`: k + 1 outcomes — the k tokens and one bucket for everything else: the teacher's remaining mass
  against the student's mass outside the top-k. With k = vocabulary size this is exactly the dense case.

Re-tempering. Stored log-probs are at the capture temperature T_c; the loss wants T. Within the top-k this is exact:
log p_T(i) = (T_c / T) · log p_Tc(i) + const, so `renormalize` accepts any T. The tail bucket is not: its mass at T
depends on the shape of the tail, which was not stored. Any guess is biased — spreading it evenly gives the largest
Σ p_i^(T_c/T) for a given mass when softening (T > T_c) and the smallest when sharpening, so the tail would always be
overstated or understated (0.897 against a true 0.747 on SmolLM2 at k = 64, T_c = 1, T = 2). So `tail` mode with
tokens outside the top-k requires T = T_c and refuses otherwise (`retempering_problem`): capture at the loss
temperature, which is what `teacher.capture_temperature` defaults to.

An empty tail (−inf) with tokens outside the top-k is a tail below what the signal could resolve (an API's rounded
log-probs, a cache written before tails were computed directly), not a zero: it is read as `UNRESOLVED_TAIL`, so
reverse-type divergences are not charged ~q_tail · 10⁴ nats through the log floor for mass the teacher does have.
"""

from __future__ import annotations

import math

import torch

from distill.losses.names import TOPK_MODES, TopKMode  # the names are written once, there
from distill.losses.signals import UNRESOLVED_TAIL, TopKSignal


def dense_support(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return log_p, log_q


def retempering_problem(k: int, vocab: int, capture_temperature: float, temperature: float, mode: str) -> str | None:
    """Why a top-k signal captured at `capture_temperature` cannot be compared at `temperature` in `mode`, or None."""
    if mode == "tail" and k < vocab and capture_temperature != temperature:
        return (f"the tail bucket's mass is known only at the capture temperature ({capture_temperature:g}), not at "
                f"the loss temperature {temperature:g} (the tail's shape was not stored, and every guess is biased); "
                "capture at the loss temperature, or compare within the top-k only (topk_mode renormalize)")
    return None


def topk_teacher_logp(teacher: TopKSignal, vocab: int, temperature: float, mode: TopKMode) -> torch.Tensor:
    """The teacher's side of the top-k support at the loss temperature: (..., k) for `renormalize`, (..., k + 1)
    with the tail last for `tail`; normalised."""
    if teacher.k > vocab:
        raise ValueError(f"top-k signal has k={teacher.k} but the student predicts only {vocab} tokens")
    if mode not in TOPK_MODES:
        raise ValueError(f"unknown top-k mode {mode!r}; use one of {', '.join(TOPK_MODES)}")
    problem = retempering_problem(teacher.k, vocab, teacher.capture_temperature, temperature, mode)
    if problem:
        raise ValueError(problem)
    scaled = teacher.logprobs.float() * (teacher.capture_temperature / temperature)
    if mode == "renormalize":
        return torch.log_softmax(scaled, dim=-1)
    tail = teacher.tail()
    if teacher.k == vocab:
        tail = torch.full_like(tail, -math.inf)
    else:
        tail = torch.where(torch.isneginf(tail), UNRESOLVED_TAIL, tail)
    return torch.log_softmax(torch.cat([scaled, tail.unsqueeze(-1)], dim=-1), dim=-1)


def topk_support(student_logits: torch.Tensor, teacher: TopKSignal, temperature: float, mode: TopKMode
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    log_p = topk_teacher_logp(teacher, student_logits.shape[-1], temperature, mode)
    ids = teacher.ids.long()
    if mode == "renormalize":
        return log_p, torch.log_softmax(student_logits.float().gather(-1, ids) / temperature, dim=-1)
    log_q_full = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    q_top = log_q_full.gather(-1, ids)
    q_tail = torch.logsumexp(log_q_full.scatter(-1, ids, -math.inf), dim=-1, keepdim=True)
    return log_p, torch.cat([q_top, q_tail], dim=-1)


def support(student_logits: torch.Tensor, teacher: torch.Tensor | TopKSignal, temperature: float,
            topk_mode: TopKMode = "tail") -> tuple[torch.Tensor, torch.Tensor]:
    """(log_p, log_q) of teacher and student on their common support."""
    if isinstance(teacher, TopKSignal):
        return topk_support(student_logits, teacher, temperature, topk_mode)
    return dense_support(student_logits, teacher, temperature)
