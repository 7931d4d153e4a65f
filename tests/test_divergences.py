"""Every divergence against an independent formula, its limits, top-k handling, and TRL's generalized JSD."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch

from distill.losses import KINDS, divergence, token_divergence
from distill.losses.signals import TopKSignal

P = np.array([0.6, 0.25, 0.1, 0.05])
Q = np.array([0.3, 0.3, 0.3, 0.1])


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * np.log(a / b)))


def _expected(kind: str, p: np.ndarray, q: np.ndarray, beta: float = 0.5, alpha: float = 0.1, mu: float = 0.5
              ) -> float:
    """Textbook formulas, written independently of the implementation."""
    if kind == "forward_kl":
        return _kl(p, q)
    if kind == "reverse_kl":
        return _kl(q, p)
    if kind == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    if kind == "interpolated_kl":
        return beta * _kl(q, p) + (1 - beta) * _kl(p, q)
    if kind == "tvd":
        return 0.5 * float(np.abs(p - q).sum())
    if kind == "skew_kl":
        return _kl(p, alpha * p + (1 - alpha) * q)
    if kind == "skew_reverse_kl":
        return _kl(q, alpha * q + (1 - alpha) * p)
    if kind == "akl":
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        head = np.zeros_like(p, dtype=bool)
        head[order[0]] = True
        for rank, index in enumerate(order):
            if cum[rank] <= mu:
                head[index] = True
        gap = np.abs(p - q)
        g_head, g_tail = gap[head].sum(), gap[~head].sum()
        return (g_head * _kl(p, q) + g_tail * _kl(q, p)) / (g_head + g_tail)
    raise AssertionError(kind)


def _logits(probs: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.log(probs), dtype=torch.float32)[None]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_matches_its_formula(kind):
    value = token_divergence(_logits(Q), _logits(P), kind, beta=0.3, alpha=0.2)
    assert value.item() == pytest.approx(_expected(kind, P, Q, beta=0.3, alpha=0.2), abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_zero_for_equal_distributions_and_positive_otherwise(kind):
    torch.manual_seed(0)
    logits = torch.randn(5, 37)
    assert token_divergence(logits, logits.clone(), kind).abs().max().item() < 1e-6
    assert (token_divergence(torch.randn(5, 37), logits, kind) > 0).all()


def test_temperature_softens_both_distributions():
    t = 3.0
    p_t = np.exp(np.log(P) / t) / np.exp(np.log(P) / t).sum()
    q_t = np.exp(np.log(Q) / t) / np.exp(np.log(Q) / t).sum()
    assert token_divergence(_logits(Q), _logits(P), temperature=t).item() == pytest.approx(_kl(p_t, q_t), abs=1e-6)


def test_jsd_endpoints_and_the_normalized_variant():
    s, t = _logits(Q), _logits(P)
    fkl, rkl = _kl(P, Q), _kl(Q, P)
    assert token_divergence(s, t, "jsd", beta=0.0).item() == pytest.approx(fkl, abs=1e-6)
    assert token_divergence(s, t, "jsd", beta=1.0).item() == pytest.approx(rkl, abs=1e-6)
    # plain JSD(β) collapses toward 0 just inside either end ...
    assert token_divergence(s, t, "jsd", beta=1e-3).item() < 0.01 * fkl
    assert token_divergence(s, t, "jsd", beta=1 - 1e-3).item() < 0.01 * rkl
    # ... while the normalized one moves continuously from forward to reverse KL
    assert token_divergence(s, t, "jsd", beta=1e-3, normalized=True).item() == pytest.approx(fkl, rel=2e-3)
    assert token_divergence(s, t, "jsd", beta=1 - 1e-3, normalized=True).item() == pytest.approx(rkl, rel=2e-3)


def test_skew_limits_and_interpolation_ends():
    s, t = _logits(Q), _logits(P)
    assert token_divergence(s, t, "skew_kl", alpha=0.0).item() == pytest.approx(_kl(P, Q), abs=1e-6)
    assert token_divergence(s, t, "skew_reverse_kl", alpha=0.0).item() == pytest.approx(_kl(Q, P), abs=1e-6)
    assert token_divergence(s, t, "interpolated_kl", beta=0.0).item() == pytest.approx(_kl(P, Q), abs=1e-6)
    assert token_divergence(s, t, "interpolated_kl", beta=1.0).item() == pytest.approx(_kl(Q, P), abs=1e-6)


def test_mask_averages_over_valid_tokens_only():
    torch.manual_seed(1)
    s, t = torch.randn(2, 6, 19), torch.randn(2, 6, 19)
    mask = torch.rand(2, 6) > 0.5
    expected = token_divergence(s, t)[mask].mean()
    assert divergence(s, t, mask=mask).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["tail", "renormalize"])
def test_topk_with_the_whole_vocabulary_equals_the_dense_teacher(kind, mode):
    torch.manual_seed(2)
    s = torch.randn(3, 41, 97, requires_grad=True)
    t = torch.randn(3, 41, 97) * 2
    dense = divergence(s, t, kind, temperature=1.5)
    (g_dense,) = torch.autograd.grad(dense, s)
    signal = TopKSignal.from_logits(t, k=97, temperature=1.5)
    sparse = divergence(s, signal, kind, temperature=1.5, topk_mode=mode)
    (g_sparse,) = torch.autograd.grad(sparse, s)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(g_sparse, g_dense, atol=1e-6)


def test_retempering_from_capture_to_loss_temperature_is_exact_within_the_topk():
    torch.manual_seed(3)
    s, t = torch.randn(4, 50), torch.randn(4, 50) * 3
    captured_at_1 = TopKSignal.from_logits(t, k=50, temperature=1.0)
    for loss_t in (0.5, 2.0, 4.0):
        dense = token_divergence(s, t, temperature=loss_t)
        assert torch.allclose(token_divergence(s, captured_at_1, temperature=loss_t), dense, atol=1e-5)
    # renormalize with k < V: the top-k at T equals the dense teacher restricted to those tokens and renormalised
    signal = TopKSignal.from_logits(t, k=8, temperature=1.0)
    ref_p = torch.softmax(t.gather(-1, signal.ids) / 2.0, -1)
    ref_q = torch.softmax(s.gather(-1, signal.ids) / 2.0, -1)
    expected = (ref_p * (ref_p / ref_q).log()).sum(-1)
    got = token_divergence(s, signal, temperature=2.0, topk_mode="renormalize")
    assert torch.allclose(got, expected, atol=1e-5)


def test_tail_bucket_holds_the_remaining_mass():
    torch.manual_seed(4)
    s, t = torch.randn(6, 30), torch.randn(6, 30)
    signal = TopKSignal.from_logits(t, k=5)
    p = torch.softmax(t, -1)
    q = torch.softmax(s, -1)
    top_p, top_q = p.gather(-1, signal.ids), q.gather(-1, signal.ids)
    tail_p, tail_q = 1 - top_p.sum(-1, keepdim=True), 1 - top_q.sum(-1, keepdim=True)
    bp, bq = torch.cat([top_p, tail_p], -1), torch.cat([top_q, tail_q], -1)
    expected = (bp * (bp / bq).log()).sum(-1)
    assert torch.allclose(token_divergence(s, signal, topk_mode="tail"), expected, atol=1e-5)
    assert torch.allclose(signal.captured_mass(), top_p.sum(-1), atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_matches_trl_generalized_jsd_loss(beta):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():  # trl is a dev dependency; its experimental namespace warns on import
        warnings.simplefilter("ignore")
        import trl.experimental.gkd as gkd
    torch.manual_seed(5)
    s, t = torch.randn(3, 41, 127), torch.randn(3, 41, 127)
    labels = torch.randint(0, 127, (3, 41))
    labels[0, :7] = -100
    labels[2, 30:] = -100
    trl = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=1.0)
    ours = divergence(s, t, "jsd", beta=beta, mask=labels != -100)
    assert ours.item() == pytest.approx(trl.item(), rel=1e-5, abs=1e-7)
    assert not math.isnan(ours.item())
