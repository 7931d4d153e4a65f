"""The sampled teacher signal (Sparse Logit Sampling): its draws, its weights, and the forward-KL estimate built on
it — unbiased for the dense loss's value and gradient (Monte Carlo, with tolerances from the estimator's own
variance), and the chunked path's closed form equal to the reference's autograd."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import DivergenceSpec
from distill.losses.functional import token_divergence
from distill.losses.fused_linear import LossSettings, LossWeights, fused_linear_loss, reference_linear_loss
from distill.losses.lm_head import LMHead
from distill.losses.sampled import sampled_forward_kl, sampled_forward_kl_grad
from distill.losses.signals import SampledSignal, TopKSignal, distinct_counts, importance_weights

V = 40


def test_distinct_counts_on_hand_built_draws():
    drawn = torch.tensor([[5, 3, 5, 5, 9], [7, 7, 7, 7, 7]])
    ids, counts = distinct_counts(drawn)
    assert ids.tolist() == [[3, 5, 9], [7, 0, 0]]
    assert counts.tolist() == [[1, 3, 1], [5, 0, 0]]


def test_from_logits_weights_are_frequencies_at_proposal_temperature_one():
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(0))
    signal = SampledSignal.from_logits(logits, draws=16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(signal.weights.sum(-1), torch.ones(6))
    assert torch.all(signal.weights * 16 == (signal.weights * 16).round())  # count / 16
    log_p = torch.log_softmax(logits, -1).gather(-1, signal.ids)
    live = signal.weights > 0
    assert torch.allclose(signal.logprobs[live], log_p[live])
    assert torch.all(signal.logprobs[~live] == 0) and torch.all(signal.weights[~live] == 0)


def _setting(seed: int):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(4, V, generator=g) * 2.0  # peaked enough that some tokens are rarely drawn
    student = torch.randn(4, V, generator=g, requires_grad=True)
    return teacher, student


def _repeat(signal_rows: torch.Tensor, m: int) -> torch.Tensor:
    return signal_rows.repeat(m, 1)


def test_inclusion_weights_on_a_hand_built_row():
    """p / (1 − (1 − r)^N) for each drawn token, r = p at t = 1 and p^(1/t) / Z above; 0 on padding."""
    p = torch.tensor([[0.5, 0.3, 0.0]])
    logprobs = torch.where(p > 0, p.log(), 0.0)
    counts = torch.tensor([[3, 1, 0]])
    weights = importance_weights(counts, logprobs, None, 4, 1.0, "inclusion")
    assert torch.allclose(weights, torch.tensor([[0.5 / (1 - 0.5**4), 0.3 / (1 - 0.7**4), 0.0]]))
    log_z = torch.tensor([math.log(0.5**0.5 + 0.3**0.5 + 0.2**0.5)])
    r = torch.tensor([0.5, 0.3]) ** 0.5 / log_z.exp()
    flat = importance_weights(counts, logprobs, log_z, 4, 2.0, "inclusion")
    assert torch.allclose(flat[0, :2], torch.tensor([0.5, 0.3]) / (1 - (1 - r) ** 4)) and flat[0, 2] == 0


@pytest.mark.parametrize("estimator", ["inclusion", "counts"])
@pytest.mark.parametrize("proposal_temperature", [1.0, 2.0])
def test_monte_carlo_mean_of_the_gradient_is_the_dense_forward_kl_gradient(proposal_temperature, estimator):
    """E[ĝ] = q − p: the mean of M independent estimates lies within 5 standard errors of the dense gradient in every
    component, the standard error taken from the estimates' own spread. At t = 1 the spread must also match the
    analytic total variance per position: (1 − Σ p²) / N for counts, Σ p²(1 − π) / π for inclusion, the latter
    below the former. A biased estimator — the top-k tail bucket, frequencies without importance weights — misses
    by tens of standard errors (checked below)."""
    teacher, student = _setting(0)
    m, draws = 20_000, 8
    temperature = 1.3
    signal = SampledSignal.from_logits(_repeat(teacher, m), draws, temperature, proposal_temperature,
                                       generator=torch.Generator().manual_seed(2), estimator=estimator)
    log_q = torch.log_softmax(_repeat(student.detach(), m) / temperature, -1)
    _, grads = sampled_forward_kl_grad(log_q, signal)
    grads = grads.view(m, 4, V)
    p = torch.softmax(teacher / temperature, -1)
    exact = torch.softmax(student.detach() / temperature, -1) - p
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(m)
    assert torch.all((mean - exact).abs() <= 5 * se + 1e-7), ((mean - exact).abs() / (se + 1e-12)).max()
    if proposal_temperature == 1.0:  # the documented variances of Σ_v ĝ_v per position
        total = grads.var(0).sum(-1)
        counts_variance = (1 - (p**2).sum(-1)) / draws
        inclusion = 1 - (1 - p) ** draws
        expected = counts_variance if estimator == "counts" else (p**2 * (1 - inclusion) / inclusion).sum(-1)
        assert torch.allclose(total, expected, rtol=0.03)
        assert torch.all(expected <= counts_variance)


def test_monte_carlo_mean_of_the_value_is_the_dense_forward_kl():
    teacher, student = _setting(1)
    m, temperature = 20_000, 1.0
    signal = SampledSignal.from_logits(_repeat(teacher, m), 8, temperature, 1.5,
                                       generator=torch.Generator().manual_seed(3))
    values = sampled_forward_kl(_repeat(student.detach(), m), signal, temperature).view(m, 4)
    exact = token_divergence(student.detach(), teacher, "forward_kl", temperature=temperature)
    assert torch.all((values.mean(0) - exact).abs() <= 5 * values.std(0) / math.sqrt(m))


def test_the_monte_carlo_check_catches_a_biased_estimator():
    """The same check applied to biased targets fails: self-normalised weights and bare frequencies from a flattened
    proposal, and the top-k tail bucket's gradient. (So the tests above can fail.)"""
    teacher, student = _setting(0)
    m, draws = 20_000, 8
    signal = SampledSignal.from_logits(_repeat(teacher, m), draws, 1.0, 2.0, generator=torch.Generator().manual_seed(2))
    # the weights normalised to sum to 1 per position (a ratio estimator: consistent, biased at small N)
    self_normalized = SampledSignal(signal.ids, signal.logprobs, signal.weights / signal.weights.sum(-1, keepdim=True),
                                    1.0)
    ids, counts = distinct_counts(torch.multinomial(torch.softmax(_repeat(teacher, m) / 2.0, -1), draws, True,
                                                    generator=torch.Generator().manual_seed(4)))
    frequencies = SampledSignal(ids, torch.zeros_like(ids, dtype=torch.float32), counts.float() / draws, 1.0)
    log_q = torch.log_softmax(_repeat(student.detach(), m), -1)
    exact = torch.softmax(student.detach(), -1) - torch.softmax(teacher, -1)
    for biased in (self_normalized, frequencies):
        grads = sampled_forward_kl_grad(log_q, biased)[1].view(m, 4, V)
        z = (grads.mean(0) - exact).abs() / (grads.std(0) / math.sqrt(m) + 1e-12)
        assert z.max() > 10
    topk = TopKSignal.from_logits(teacher, k=4)
    dense_grad = torch.softmax(student.detach(), -1)
    p_top = topk.logprobs.exp()
    tail = 1 - p_top.sum(-1, keepdim=True)
    q = torch.softmax(student.detach(), -1)
    q_tail = q.scatter(-1, topk.ids, 0).sum(-1, keepdim=True)
    topk_grad = (q - tail * q / q_tail).scatter(-1, topk.ids, q.gather(-1, topk.ids) - p_top)
    assert (topk_grad - exact).abs().max() > 1e-3 and torch.allclose(dense_grad - torch.softmax(teacher, -1), exact)


@pytest.mark.parametrize("proposal_temperature", [1.0, 1.8])
def test_chunked_closed_form_matches_reference_autograd(proposal_temperature):
    g = torch.Generator().manual_seed(5)
    n, h, vocab_model, vocab = 57, 12, 300, 293
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    head = LMHead((torch.randn(vocab_model, h, generator=g) * 0.3).requires_grad_())
    targets = torch.randint(0, vocab, (n,), generator=g)
    signal = SampledSignal.from_logits(torch.randn(n, vocab, generator=g) * 2, 12, 1.5, proposal_temperature,
                                       generator=g)
    settings = LossSettings(spec=DivergenceSpec(kind="forward_kl"), temperature=1.5,
                            weights=LossWeights(ce=0.3, kd=0.7 * 1.5**2), vocab_size=vocab)
    ref = reference_linear_loss(hidden, head, targets, signal, settings)
    fused = fused_linear_loss(hidden, head, targets, signal, settings, chunk_size=13)
    for a, b in zip(fused, ref, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-5)
    inputs = [hidden, head.weight]
    for a, b in zip(torch.autograd.grad(fused[0], inputs), torch.autograd.grad(ref[0], inputs), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd", "tvd"])
def test_a_sampled_signal_refuses_divergences_it_cannot_estimate(kind):
    teacher, student = _setting(2)
    signal = SampledSignal.from_logits(teacher, 8)
    with pytest.raises(ValueError, match="forward KL only"):
        token_divergence(student, signal, kind)
    settings = LossSettings(spec=DivergenceSpec(kind=kind), temperature=1.0, weights=LossWeights(ce=0.0, kd=1.0),
                            vocab_size=V)
    head = LMHead(torch.eye(V))
    for path in (fused_linear_loss, reference_linear_loss):
        with pytest.raises(ValueError, match="forward KL only"):
            path(student.detach(), head, torch.zeros(4, dtype=torch.long), signal, settings)


def test_a_sampled_signal_refuses_another_loss_temperature():
    teacher, student = _setting(3)
    with pytest.raises(ValueError, match="re-tempered"):
        token_divergence(student, SampledSignal.from_logits(teacher, 8, temperature=1.0), temperature=2.0)
    assert token_divergence(student, SampledSignal.from_logits(teacher, 8, temperature=2.0), temperature=2.0,
                            kind="jsd", beta=0.0).shape == (4,)
