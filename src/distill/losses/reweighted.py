"""Token-level reweighted log-likelihood: the form the on-policy estimators and Hybrid Policy Distillation share.

    loss = − Σ_positions Σ_j w_j · log q(token_j)        w detached; q = softmax(student logits / T)

At each valid position a *rule* looks at the student's and the teacher's log-probabilities (without gradients) and
names a few tokens with their weights; the loss raises log q of a token with a positive weight and lowers it with a
negative one. HPD's paper frames every KD method this way (Zhu et al. 2026, §3). Two rules live here:

- `sampled_reverse_kl`: the student's own token y with w = log p(y) − log q(y), the teacher-minus-student log-ratio
  used as a per-token advantage (the "on-policy distillation" of Thinking Machines, 2025). When y ~ q,
  E_y[−(log p − log q)(y) ∇log q(y)] = ∇ KL(q ‖ p) at that position (E_q[∇log q] = 0), so it is an unbiased,
  one-sample estimate of the per-position reverse-KL gradient; the full sum over the vocabulary (`divergence:
  reverse_kl`) is its exact, lower-variance counterpart.
- `hpd`: Hybrid Policy Distillation (arXiv 2604.20244; the authors' LlamaFactory `hpd.py`). With p the teacher, q the
  student, a* the data token and â one token drawn from q at the same prefix,
      k1 = q(a*)·(log p(a*) − log q(a*)),  k1' = q(â)·(log p(â) − log q(â))
      w* = 2p(a*) + k1 if k1 > 0 and k1' < 0;  p(a*) + k1 if k1 > 0 otherwise;  k1 if k1 ≤ 0
      w_â = k1'·[k1' < 0]·[â ≠ a*]
  (At k1 = 0 exactly the authors' code takes the `k1` branch, as here; the issue's wording puts it in `p + k1`.)

`reweighted_loss` runs a rule chunk by chunk through `chunked_head_loss` (never the full logits);
`reweighted_loss_reference` is its plain twin: full logits, ordinary autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from distill.losses.choice import choose_tokens
from distill.losses.cross_entropy import cross_entropy_sum
from distill.losses.fused_linear import Teacher, auto_chunk_size, chunked_head_loss, teacher_rows
from distill.losses.lm_head import LMHead
from distill.losses.signals import PARTIAL_SIGNALS, SampledSignal, TopKSignal

# (log q (n, V), log p (n, V), targets (n,), draws (n,) uniforms or None) -> (ids (n, m), weights (n, m), terms (t,))
Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
                tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def sampled_reverse_kl(log_q: torch.Tensor, log_p: torch.Tensor, targets: torch.Tensor, draws: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids = the token y at each position, w = log p(y) − log q(y); terms: Σ (log q − log p)(y), the k1 estimate
    of the reverse KL (what the student's text costs under the teacher, per token)."""
    ids = targets.unsqueeze(-1)
    ratio = log_p.gather(-1, ids) - log_q.gather(-1, ids)
    return ids, ratio, (-ratio).sum().reshape(1)


SAMPLED_REVERSE_KL_TERMS = ("rkl_estimate",)


def hpd(log_q: torch.Tensor, log_p: torch.Tensor, targets: torch.Tensor, draws: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HPD's two tokens per position (a*, â) and their weights (w*, w_â); terms: Σ w*, Σ w_â, Σ [â ≠ a*]."""
    if draws is None:
        raise ValueError("hpd draws a token from the student at each position: the batch must carry `draws`")
    n = log_q.shape[0]
    one = torch.ones(n, device=log_q.device)
    sampled = choose_tokens(log_q, one, one, draws)  # â ~ q, by the row's own uniform
    ids = torch.stack([targets, sampled], dim=-1)
    lq, lp = log_q.gather(-1, ids), log_p.gather(-1, ids)
    k1 = lq.exp() * (lp - lq)  # (n, 2): k1 of a* and k1' of â
    p_star = lp[:, 0].exp()
    forward = k1[:, 0] > 0
    w_star = torch.where(forward, p_star + k1[:, 0], k1[:, 0])
    w_star = w_star + torch.where(forward & (k1[:, 1] < 0), p_star, torch.zeros_like(p_star))
    differs = sampled != targets
    w_hat = k1[:, 1].clamp(max=0.0) * differs
    weights = torch.stack([w_star, w_hat], dim=-1)
    return ids, weights, torch.stack([w_star.sum(), w_hat.sum(), differs.sum().float()])


HPD_TERMS = ("hpd_w_data", "hpd_w_sampled", "hpd_sampled_differs")


def _teacher_logp(rows: torch.Tensor | TopKSignal | SampledSignal | None, vocab: int, temperature: float
                  ) -> torch.Tensor:
    if rows is None or isinstance(rows, PARTIAL_SIGNALS):
        raise ValueError("this objective needs the teacher's whole distribution (a live teacher): the weights need "
                         "p at tokens the student draws, which a top-k signal may not hold")
    return torch.log_softmax(rows[:, :vocab].float() / temperature, dim=-1)


def _rule_loss(logits: torch.Tensor, rows, targets: torch.Tensor, draws: torch.Tensor | None, rule: Rule,
               temperature: float, ce_weight: float, rule_weight: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, terms = [Σ CE, Σ −w·log q, *rule terms]) from logits (n, V) with the graph."""
    log_q = torch.log_softmax(logits.float() / temperature, dim=-1)
    log_p = _teacher_logp(rows, logits.shape[-1], temperature)
    ids, weights, terms = rule(log_q.detach(), log_p, targets, draws)
    policy = -(weights.detach() * log_q.gather(-1, ids)).sum()
    ce = cross_entropy_sum(logits, targets)
    total = ce_weight * ce + rule_weight * policy
    return total, torch.cat([torch.stack([ce.detach(), policy.detach()]), terms.detach().float()])


def reweighted_loss(hidden: torch.Tensor, head: LMHead, targets: torch.Tensor, teacher: Teacher,
                    draws: torch.Tensor | None, rule: Rule, n_rule_terms: int, *, vocab_size: int,
                    temperature: float = 1.0, ce_weight: float = 0.0, rule_weight: float = 1.0,
                    chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, terms) over N valid positions: hidden (N, H), targets (N,), teacher rows and draws (N,) aligned with
    them; terms = [Σ CE, Σ −w·log q, *the rule's terms]. Chunk by chunk; only `total` carries gradients."""

    def chunk_loss(start: int, end: int, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = raw.detach().requires_grad_()
        with torch.enable_grad():
            logits = head.finish(raw)[:, :vocab_size]
            rows = teacher_rows(teacher, start, end, vocab_size)
            chunk_draws = None if draws is None else draws[start:end]
            total, terms = _rule_loss(logits, rows, targets[start:end], chunk_draws, rule, temperature, ce_weight,
                                      rule_weight)
            (grad,) = torch.autograd.grad(total, raw)
        return total.detach(), terms, grad

    size = chunk_size if chunk_size is not None else auto_chunk_size(vocab_size)
    return chunked_head_loss(hidden, head, chunk_loss, 2 + n_rule_terms, size)


def reweighted_loss_reference(logits: torch.Tensor, targets: torch.Tensor, teacher_rows: torch.Tensor | None,
                              draws: torch.Tensor | None, rule: Rule, *, temperature: float = 1.0,
                              ce_weight: float = 0.0, rule_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain twin of `reweighted_loss`: full logits (N, V) with the graph, dense teacher logits (N, V)."""
    return _rule_loss(logits, teacher_rows, targets, draws, rule, temperature, ce_weight, rule_weight)
