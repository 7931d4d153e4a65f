"""Chunked fused-linear distillation: CE + divergence from hidden states, never holding full logits.

A batch of N valid tokens with a vocabulary of V needs N × V student logits, N × V teacher logits and as much again
for their gradients: gigabytes at N = 8k, V = 150k. Here tokens are processed `chunk_size` at a time: project the
chunk's hidden states through the LM head, compute the loss pieces on the chunk's logits with the reference
functions (so the math is shared with the plain path), take the gradient with respect to the chunk's logits, and
immediately turn it into gradients for the hidden states (g @ W) and the head (gᵀ @ h). Only chunk × V logits are
alive at any time. Gradients are computed during the forward pass (as Liger-Kernel does) and scaled by the incoming
gradient in backward. The teacher side is projected chunk by chunk from its own hidden states too, or taken from a
top-k signal.

`reference_linear_loss` is the plain twin — full logits, ordinary autograd — that tests compare this against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from distill.losses.compiled import compiled
from distill.losses.cross_entropy import cross_entropy_sum
from distill.losses.divergences import LOG_FLOOR, DivergenceSpec, kl, log_mixture, on_support
from distill.losses.lm_head import LMHead
from distill.losses.sampled import check_sampled, sampled_forward_kl, sampled_forward_kl_grad
from distill.losses.signals import PARTIAL_SIGNALS, SampledSignal, TeacherHidden, TeacherSignal, TopKSignal
from distill.losses.support import TopKMode, support, topk_teacher_logp

Teacher = TeacherSignal | None  # None: no teacher (cross-entropy only)
Rows = torch.Tensor | TopKSignal | SampledSignal | None  # a chunk's teacher: dense logits, a partial signal, or none


@dataclass(frozen=True)
class LossWeights:
    """total = ce · Σ CE + kd · Σ divergence, both sums over the given tokens."""

    ce: float
    kd: float


@dataclass(frozen=True)
class LossSettings:
    spec: DivergenceSpec
    temperature: float
    weights: LossWeights
    vocab_size: int  # logits are cut to the tokenizer's size (padded embedding rows are not tokens)
    topk_mode: TopKMode = "tail"
    closed_form: bool = True  # gradient in closed form where one exists (see _has_closed_form), else autograd
    compiled: bool = False  # CE and dense forward KL through their torch.compile twins (losses/compiled.py)


def teacher_rows(teacher: Teacher, start: int, end: int, vocab: int) -> Rows:
    if teacher is None:
        return None
    if isinstance(teacher, TeacherHidden):
        with torch.no_grad():
            return teacher.head.logits(teacher.hidden[start:end])[:, :vocab]
    if isinstance(teacher, PARTIAL_SIGNALS):
        return teacher.select(slice(start, end))
    return teacher[start:end, :vocab]


def loss_from_logits(logits: torch.Tensor, targets: torch.Tensor, teacher_rows: Rows, settings: LossSettings
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ CE, Σ divergence) over N tokens from full student logits (N, V); the one place both paths compute loss."""
    ce = cross_entropy_sum(logits, targets)
    if teacher_rows is None or settings.weights.kd == 0.0:
        return ce, torch.zeros((), device=logits.device)
    if isinstance(teacher_rows, SampledSignal):
        check_sampled(teacher_rows, settings.spec, settings.temperature)
        return ce, sampled_forward_kl(logits, teacher_rows, settings.temperature).sum()
    log_p, log_q = support(logits, teacher_rows, settings.temperature, settings.topk_mode)
    return ce, on_support(log_p, log_q, settings.spec).sum()


def _closed_form_chunk(logits: torch.Tensor, targets: torch.Tensor, teacher: Rows, settings: LossSettings
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ CE, Σ D(P_T ‖ Q_T), ∂total/∂logits) in closed form and in place, for forward KL (below), and for reverse
    KL and JSD(β) with a dense teacher (`_dense_closed_form`):

        ∂/∂z [w_ce · CE] = w_ce · (softmax(z) − onehot(target))
        ∂/∂z [w_kd · KL(P_T ‖ softmax(z / T))] = (w_kd / T) · (softmax(z / T) − P_T)

    for a dense teacher; a top-k teacher (a cache) has its own closed form (`_topk_forward_kl`), and a sampled one
    its unbiased estimate (`losses/sampled.py`). About half the
    passes over the (chunk × vocab) logits of the generic autograd path, and no graph; that path is its reference
    twin (tests hold them to 1e-5)."""
    w, temperature = settings.weights, settings.temperature
    if settings.compiled and (teacher is None or w.kd == 0.0):
        return compiled("ce")(logits, targets, w.ce)
    if settings.compiled and isinstance(teacher, torch.Tensor) and settings.spec.is_forward_kl:
        return compiled("forward_kl")(logits, teacher, targets, w.ce, w.kd, temperature)
    rows = torch.arange(logits.shape[0], device=logits.device)
    log_z = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # log softmax(z): CE's, and KD's at T = 1
    ce = -log_z[rows, targets].sum()  # always reported; its gradient only when weighted
    with_kd = teacher is not None and w.kd != 0.0
    # dense forward KL at T = 1 shares softmax(z) with CE: ∂ = (w_ce + w_kd)·q − w_kd·p − w_ce·onehot
    shared = with_kd and temperature == 1.0 and isinstance(teacher, torch.Tensor) and settings.spec.is_forward_kl
    scale = w.ce + (w.kd if shared else 0.0)
    grad = log_z.exp().mul_(scale) if scale != 0.0 else torch.zeros_like(logits)
    if w.ce != 0.0:
        grad[rows, targets] -= w.ce
    kd = torch.zeros((), device=logits.device)
    if not with_kd:
        return ce, kd, grad
    if temperature == 1.0:
        log_q = log_z
    else:
        log_q = logits / temperature
        log_q -= torch.logsumexp(log_q, dim=-1, keepdim=True)
    if isinstance(teacher, TopKSignal):
        kd, grad_kd = _topk_forward_kl(log_q, teacher, settings)
        grad.add_(grad_kd, alpha=w.kd / temperature)
        return ce, kd, grad
    if isinstance(teacher, SampledSignal):
        check_sampled(teacher, settings.spec, temperature)
        kd, grad_kd = sampled_forward_kl_grad(log_q, teacher)
        grad.add_(grad_kd, alpha=w.kd / temperature)
        return ce, kd, grad
    log_p = teacher.float() / temperature  # a new tensor: the caller's rows are never changed
    log_p -= torch.logsumexp(log_p, dim=-1, keepdim=True)
    if not settings.spec.is_forward_kl:
        kd, grad_kd = _dense_closed_form(log_p, log_q, settings.spec)
        grad.add_(grad_kd, alpha=w.kd / temperature)
        return ce, kd, grad
    p = log_p.exp()
    # the same floor as divergences.kl: tokens the teacher rules out (−inf logits) contribute 0, not NaN
    kd = (p * (log_p.clamp_(min=LOG_FLOOR) - log_q.clamp(min=LOG_FLOOR))).sum()
    if shared:
        grad.sub_(p, alpha=w.kd)
    else:
        grad.add_(log_q.exp_().sub_(p), alpha=w.kd / temperature)
    return ce, kd, grad


def _dense_closed_form(log_p: torch.Tensor, log_q: torch.Tensor, spec: DivergenceSpec
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ D, ∂D/∂s) for a dense teacher, s = z / T, for the on-policy divergences (`CLOSED_FORM` kinds):

        reverse KL:  ∂/∂s_v KL(Q ‖ P) = q_v · (log q_v − log p_v − KL(Q ‖ P))
        JSD(β), M = βP + (1 − β)Q:  ∂/∂s_v = (1 − β) · q_v · (log q_v − log m_v − KL(Q ‖ M))   (÷ β(1 − β) when
        normalized)

    (∂JSD/∂q_v = (1 − β)(log q_v − log m_v): the terms through M cancel.) The value is the library's own
    (`on_support`); log p is floored as there, so a token the teacher rules out costs q_v·|LOG_FLOOR|, finite."""
    kd = on_support(log_p, log_q, spec).sum()
    q = log_q.exp()
    if spec.kind == "reverse_kl" or (spec.kind == "jsd" and spec.beta == 1.0):
        ratio = log_q - log_p.clamp(min=LOG_FLOOR)
        scale = 1.0
    else:  # jsd with β < 1 (β = 0 is forward KL, routed before)
        ratio = log_q - log_mixture(log_p, log_q, spec.beta)
        scale = (1.0 - spec.beta) / (spec.beta * (1.0 - spec.beta) if spec.normalized else 1.0)
    centred = ratio - (q * ratio).sum(-1, keepdim=True)
    return kd, centred.mul_(q).mul_(scale)


def _topk_forward_kl(log_q: torch.Tensor, teacher: TopKSignal, settings: LossSettings
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ KL, ∂KL/∂(z/T)) on a top-k support, given the student's log_softmax(z / T) over the vocabulary.

    `renormalize`: both sides renormalised over the k ids K; the gradient is q'_v − p_v on K and 0 elsewhere.
    `tail`: k + 1 outcomes, the last the mass outside K. With q = softmax(z / T) and q_tail = Σ_{v∉K} q_v,

        ∂KL/∂s_v = q_v − p_v                    for v in K
        ∂KL/∂s_v = q_v − p_tail · q_v / q_tail   for v outside K

    (the tail's teacher mass is pushed onto the student's tail tokens in proportion to what the student gives them).
    """
    ids = teacher.ids.long()
    log_p = topk_teacher_logp(teacher, log_q.shape[-1], settings.temperature, settings.topk_mode)
    p = log_p.exp()
    q_top = log_q.gather(-1, ids)
    if settings.topk_mode == "renormalize":
        log_qk = q_top - torch.logsumexp(q_top, dim=-1, keepdim=True)
        return kl(log_p, log_qk).sum(), torch.zeros_like(log_q).scatter_(-1, ids, log_qk.exp() - p)
    rest = log_q.scatter(-1, ids, -math.inf)  # log q outside K
    log_q_tail = torch.logsumexp(rest, dim=-1, keepdim=True)
    kd = kl(log_p, torch.cat([q_top, log_q_tail], dim=-1)).sum()
    grad = log_q.exp()
    grad -= rest.add_(log_p[:, -1:] - log_q_tail.clamp(min=LOG_FLOOR)).exp_()
    return kd, grad.scatter_(-1, ids, q_top.exp() - p[:, :-1])


def _has_closed_form(spec: DivergenceSpec, rows: Rows) -> bool:
    """Forward KL for any teacher; reverse KL and JSD(β) for a dense one (the on-policy divergences)."""
    if spec.is_forward_kl:
        return True
    return spec.kind in ("reverse_kl", "jsd") and not isinstance(rows, PARTIAL_SIGNALS)


def _chunk(raw: torch.Tensor, head: LMHead, targets: torch.Tensor, rows: Rows, settings: LossSettings
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ CE, Σ divergence, ∂total/∂raw) for one chunk of raw projections (chunk, V_model)."""
    vocab = settings.vocab_size
    closed = settings.closed_form and _has_closed_form(settings.spec, rows)
    if closed and head.scale == 1.0 and head.softcap is None and raw.dtype == torch.float32:
        ce, kd, grad_logits = _closed_form_chunk(raw[:, :vocab], targets, rows, settings)
        if vocab == raw.shape[1]:
            return ce, kd, grad_logits
        grad = torch.zeros_like(raw)
        grad[:, :vocab] = grad_logits
        return ce, kd, grad
    raw = raw.detach().requires_grad_()
    with torch.enable_grad():
        logits = head.finish(raw)[:, :vocab]
        if closed:  # a closed-form gradient for the logits, then back through scale / soft-cap
            ce, kd, grad_logits = _closed_form_chunk(logits.detach(), targets, rows, settings)
            (grad,) = torch.autograd.grad(logits, raw, grad_logits)
            return ce, kd, grad
        ce, kd = loss_from_logits(logits, targets, rows, settings)
        (grad,) = torch.autograd.grad(settings.weights.ce * ce + settings.weights.kd * kd, raw)
    return ce.detach(), kd.detach(), grad


# one chunk's loss: (start, end, raw projections (chunk, V_model)) -> (Σ total, Σ of each term (m,), ∂total/∂raw)
ChunkLoss = Callable[[int, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class _ChunkedHeadLoss(torch.autograd.Function):
    """Σ over N tokens of a loss on their logits, one chunk of tokens at a time: each chunk's projections go to
    `chunk_loss`, which returns the chunk's sums and the gradient for its projections, turned at once into gradients
    for the hidden states (g @ W) and the head (gᵀ @ h). Every chunked loss of the library runs through here."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, head: LMHead, chunk_loss: ChunkLoss, n_terms: int, chunk_size: int):
        n = hidden.shape[0]
        grad_hidden = torch.zeros_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and bias.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        terms = torch.zeros(n_terms, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            h = hidden[start:end]
            chunk_total, chunk_terms, g = chunk_loss(start, end, head.project(h))
            total += chunk_total
            terms += chunk_terms
            g = g.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = g @ weight
            if grad_weight is not None:
                grad_weight.addmm_(g.t().float(), h.float())
            if grad_bias is not None:
                grad_bias += g.float().sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(terms)
        return total, terms

    @staticmethod
    def backward(ctx, grad_total, _grad_terms):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            None if grad_hidden is None else grad_hidden * grad_total.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_total).to(weight_dtype),
            None if grad_bias is None else (grad_bias * grad_total).to(bias_dtype),
            None, None, None, None,
        )


def chunked_head_loss(hidden: torch.Tensor, head: LMHead, chunk_loss: ChunkLoss, n_terms: int, chunk_size: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, terms (n_terms,)) of `chunk_loss` summed over chunks of `hidden` (N, H); only `total` carries
    gradients (to `hidden`, `head.weight`, `head.bias`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return _ChunkedHeadLoss.apply(hidden, head.weight, head.bias, head, chunk_loss, n_terms, chunk_size)


def auto_chunk_size(vocab_size: int, elements: int = 1 << 24) -> int:
    """Tokens per chunk so that one chunk of fp32 logits holds about `elements` values (64 MiB): 341 tokens at a
    49k vocabulary, 64 at 262k. Several such tensors are alive per chunk; this keeps them small next to the model."""
    return max(64, min(8192, elements // vocab_size))


def fused_linear_loss(hidden: torch.Tensor, head: LMHead, targets: torch.Tensor, teacher: Teacher,
                      settings: LossSettings, chunk_size: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, Σ CE, Σ divergence) over N tokens: hidden (N, H) of valid positions, targets (N,), teacher rows
    aligned with them. Only `total` carries gradients (to `hidden`, `head.weight`, `head.bias`). `chunk_size`
    None: `auto_chunk_size` of the vocabulary."""
    w = settings.weights

    def chunk_loss(start: int, end: int, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = teacher_rows(teacher, start, end, settings.vocab_size)
        ce, kd, grad = _chunk(raw, head, targets[start:end], rows, settings)
        return w.ce * ce + w.kd * kd, torch.stack([ce, kd]), grad

    total, terms = chunked_head_loss(hidden, head, chunk_loss, 2,
                                     chunk_size if chunk_size is not None else auto_chunk_size(settings.vocab_size))
    return total, terms[0], terms[1]


def reference_linear_loss(hidden: torch.Tensor, head: LMHead, targets: torch.Tensor, teacher: Teacher,
                          settings: LossSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plain twin of `fused_linear_loss`: full logits, ordinary autograd."""
    logits = head.logits(hidden)[:, : settings.vocab_size]
    return weighted_loss(logits, targets, teacher_rows(teacher, 0, hidden.shape[0], settings.vocab_size), settings)


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_rows: Rows, settings: LossSettings
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, Σ CE, Σ divergence) from full logits with ordinary autograd: the reference path."""
    ce, kd = loss_from_logits(logits, targets, teacher_rows, settings)
    return settings.weights.ce * ce + settings.weights.kd * kd, ce.detach(), kd.detach()
