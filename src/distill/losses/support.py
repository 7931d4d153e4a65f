"""Put teacher and student on a common support, at the loss temperature, as normalised log-probabilities.

- dense teacher: the whole vocabulary; both are `log_softmax(logits / T)`.
- top-k, `renormalize`: the k teacher tokens are treated as the whole distribution; teacher and student are both
  renormalised over them.
- top-k, `tail`: k + 1 outcomes — the k tokens and one bucket for everything else: the teacher's remaining mass
  against the student's mass outside the top-k. With k = vocabulary size this is exactly the dense case.

Re-tempering. Stored log-probs are at the capture temperature T_c; the loss wants T. Within the top-k this is exact:
log p_T(i) = (T_c / T) · log p_Tc(i) + const. The tail's shape was not stored, so for T ≠ T_c its mass is re-tempered
as if spread evenly over the V − k other tokens (exact when T = T_c, and the maximum-entropy guess otherwise).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from distill.teachers.signal import TopKSignal

TopKMode = Literal["renormalize", "tail"]
TOPK_MODES: tuple[str, ...] = TopKMode.__args__


def dense_support(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return log_p, log_q


def topk_teacher_logp(teacher: TopKSignal, vocab: int, temperature: float, mode: TopKMode) -> torch.Tensor:
    """The teacher's side of the top-k support at the loss temperature: (..., k) for `renormalize`, (..., k + 1)
    with the tail last for `tail`; normalised."""
    if teacher.k > vocab:
        raise ValueError(f"top-k signal has k={teacher.k} but the student predicts only {vocab} tokens")
    ratio = teacher.capture_temperature / temperature
    scaled = teacher.logprobs.float() * ratio
    if mode == "renormalize":
        return torch.log_softmax(scaled, dim=-1)
    if mode != "tail":
        raise ValueError(f"unknown top-k mode {mode!r}; use one of {', '.join(TOPK_MODES)}")
    n_tail = vocab - teacher.k
    tail = teacher.tail()
    if n_tail == 0:
        tail = torch.full_like(tail, -math.inf)
    elif ratio != 1.0:
        tail = math.log(n_tail) + ratio * (tail - math.log(n_tail))
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
