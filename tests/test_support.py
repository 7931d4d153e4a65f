"""Top-k teachers on a common support (losses/support.py, losses/signals.py): the stored tail is the true tail even
when it is tiny, the tail bucket is never re-tempered by guesswork, coarse-graining never increases an
f-divergence, and AKL at μ = 1 is forward KL. Every expected value here is computed from the dense teacher, not with
the helpers under test."""

from __future__ import annotations

import pytest
import torch

from distill.losses import divergence, token_divergence
from distill.losses.divergences import akl, forward_kl
from distill.losses.signals import TopKSignal

# f-divergences: merging outcomes (the k + 1 buckets) can only lower them (data processing inequality)
F_DIVERGENCES = ["forward_kl", "reverse_kl", "jsd", "interpolated_kl", "tvd", "skew_kl", "skew_reverse_kl"]


def _peaked(rows: int = 64, vocab: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A confident teacher (tail mass far below fp32's resolution of 1 − Σ top-k) and an ordinary student."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(rows, vocab, generator=g) * 3.0
    teacher[torch.arange(rows), torch.randint(0, vocab, (rows,), generator=g)] += 40.0
    student = torch.randn(rows, vocab, generator=g)
    return student, teacher


def _coarse(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log of (p_T on the ids, p_T of everything else), from the dense logits."""
    log_p = torch.log_softmax(logits.double() / temperature, dim=-1)
    rest = log_p.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([log_p.gather(-1, ids), rest], dim=-1)


@pytest.mark.parametrize("capture_temperature", [1.0, 0.7, 0.5])
def test_the_stored_tail_is_the_true_tail_even_below_fp32_resolution(capture_temperature):
    _, teacher = _peaked()
    signal = TopKSignal.from_logits(teacher, k=64, temperature=capture_temperature)
    true_tail = _coarse(teacher, signal.ids, capture_temperature)[:, -1]
    assert true_tail.max() < -17  # below 2^-24: log(1 − Σ top-k) would underflow to −inf here
    assert torch.isfinite(signal.tail()).all()
    assert torch.allclose(signal.tail().double(), true_tail, rtol=1e-4)


@pytest.mark.parametrize("kind", F_DIVERGENCES)
def test_coarse_graining_never_increases_an_f_divergence_on_a_peaked_teacher(kind):
    """The k + 1 buckets merge outcomes, so the top-k value is at most the dense one. Before the tail was computed
    directly, a reverse KL here was ~10³ against a dense ~6 (the empty tail charged through the log floor)."""
    student, teacher = _peaked()
    signal = TopKSignal.from_logits(teacher, k=64, temperature=1.0)
    dense = token_divergence(student, teacher, kind)
    sparse = token_divergence(student, signal, kind, topk_mode="tail")
    assert torch.isfinite(sparse).all()
    assert (sparse <= dense + 1e-4).all(), (sparse - dense).max()


@pytest.mark.parametrize("kind", ["reverse_kl", "akl", "skew_reverse_kl"])
def test_a_tail_given_as_zero_costs_no_more_than_the_dense_divergence(kind):
    """A signal whose tail is −inf although tokens lie outside the top-k (an API's rounded log-probs, an old cache):
    the tail is below what fp32 resolves, not zero, and must not be charged ~q_tail · 10⁴ nats."""
    student, teacher = _peaked()
    full = TopKSignal.from_logits(teacher, k=64)
    empty_tail = TopKSignal(full.ids, full.logprobs, torch.full_like(full.tail(), float("-inf")))
    dense = token_divergence(student, teacher, kind)
    sparse = token_divergence(student, empty_tail, kind, topk_mode="tail")
    assert (sparse <= dense + 1e-3).all(), (sparse - dense).max()
    s = student.clone().requires_grad_()
    (grad,) = torch.autograd.grad(divergence(s, empty_tail, kind), s)
    (grad_dense,) = torch.autograd.grad(divergence(s, teacher, kind), s)
    assert grad.norm() < 2 * grad_dense.norm()


@pytest.mark.parametrize("capture_temperature", [1.0, 3.0])
@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl"])
def test_tail_mode_equals_the_coarse_grained_dense_teacher_at_the_capture_temperature(kind, capture_temperature):
    student, teacher = _peaked(rows=16, seed=1)
    teacher = teacher / 8  # a softer teacher too
    signal = TopKSignal.from_logits(teacher, k=32, temperature=capture_temperature)
    log_p = _coarse(teacher, signal.ids, capture_temperature)
    log_q = _coarse(student, signal.ids, capture_temperature)
    a, b = (log_p, log_q) if kind == "forward_kl" else (log_q, log_p)
    expected = (a.exp() * (a - b)).sum(-1)
    got = token_divergence(student, signal, kind, temperature=capture_temperature, topk_mode="tail")
    assert torch.allclose(got.double(), expected, atol=1e-5, rtol=1e-4)


def test_tail_mode_refuses_a_loss_temperature_other_than_the_capture_temperature():
    """The tail's shape is not stored, so its mass at another temperature is unknown (a uniform guess overstates it
    when softening, understates it when sharpening). Within the top-k alone (`renormalize`) re-tempering is exact."""
    student, teacher = _peaked(rows=8)
    signal = TopKSignal.from_logits(teacher, k=16, temperature=1.0)
    with pytest.raises(ValueError, match="capture temperature"):
        token_divergence(student, signal, temperature=2.0, topk_mode="tail")
    renormalized = token_divergence(student, signal, temperature=2.0, topk_mode="renormalize")
    p = torch.log_softmax(teacher.gather(-1, signal.ids) / 2.0, -1)
    q = torch.log_softmax(student.gather(-1, signal.ids) / 2.0, -1)
    assert torch.allclose(renormalized, (p.exp() * (p - q)).sum(-1), atol=1e-5)
    # k = vocabulary: no tail, so re-tempering is exact in `tail` mode too
    whole = TopKSignal.from_logits(teacher, k=teacher.shape[-1], temperature=1.0)
    dense = token_divergence(student, teacher, temperature=2.0)
    assert torch.allclose(token_divergence(student, whole, temperature=2.0), dense, atol=1e-4)


def test_akl_at_mu_one_is_forward_kl():
    """The head holds cumulative teacher mass up to μ; at μ = 1 that is every token, so AKL is forward KL. In fp32 the
    sorted cumulative sum can exceed 1.0 by an ulp, which used to push the last tokens into the tail."""
    g = torch.Generator().manual_seed(7)
    log_p = torch.log_softmax(torch.randn(256, 1000, generator=g) * 2, dim=-1)
    sorted_sum = log_p.exp().sort(dim=-1, descending=True).values.cumsum(-1)
    assert (sorted_sum > 1.0).any(), "the test needs rows whose fp32 cumulative sum overshoots 1"
    log_q = torch.log_softmax(torch.randn(256, 1000, generator=g), dim=-1).requires_grad_()
    value = akl(log_p, log_q, mu=1.0)
    expected = forward_kl(log_p, log_q)
    assert torch.allclose(value, expected, atol=1e-6)
    (grad,) = torch.autograd.grad(value.sum(), log_q)
    (grad_expected,) = torch.autograd.grad(expected.sum(), log_q)
    assert torch.allclose(grad, grad_expected, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.float32])
def test_a_zero_one_mask_of_any_dtype_means_the_same_as_a_boolean_mask(dtype):
    torch.manual_seed(3)
    s, t = torch.randn(2, 7, 13), torch.randn(2, 7, 13)
    mask = torch.rand(2, 7) > 0.4
    expected = divergence(s, t, mask=mask)
    assert divergence(s, t, mask=mask.to(dtype)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_mask_that_is_not_zero_one_is_refused():
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    with pytest.raises(ValueError, match="mask"):
        divergence(s, t, mask=torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="mask"):
        divergence(s, t, mask=torch.ones(2, 4, dtype=torch.bool))
