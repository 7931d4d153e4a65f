"""The chunked fused-linear path against its plain twin: values and gradients for every divergence, dense and top-k
teachers, with bias / logit scale / soft-cap heads, on awkward shapes."""

from __future__ import annotations

import pytest
import torch

from distill.losses import KINDS, DivergenceSpec
from distill.losses.fused_linear import (
    LossSettings,
    LossWeights,
    TeacherHidden,
    fused_linear_loss,
    reference_linear_loss,
)
from distill.losses.lm_head import LMHead
from distill.losses.signals import TopKSignal

N, H, H_T, V_MODEL, VOCAB = 123, 24, 32, 1280, 1271  # 3 × 41 tokens; padded head, real vocab 1271


def _problem(seed: int, *, bias: bool = False, scale: float = 1.0, softcap: float | None = None):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, requires_grad=True)
    weight = (torch.randn(V_MODEL, H, generator=g) * 0.3).requires_grad_()
    b = (torch.randn(V_MODEL, generator=g) * 0.1).requires_grad_() if bias else None
    head = LMHead(weight, b, scale=scale, softcap=softcap)
    teacher_head = LMHead(torch.randn(V_MODEL, H_T, generator=g) * 0.4, softcap=softcap)
    teacher_hidden = torch.randn(N, H_T, generator=g)
    targets = torch.randint(0, VOCAB, (N,), generator=g)
    return hidden, head, targets, TeacherHidden(teacher_hidden, teacher_head)


def _teacher(kind_of_teacher: str, dense: TeacherHidden, temperature: float):
    """The dense teacher in the form asked for. A top-k signal with a tail is captured at the loss temperature (the
    only one its tail bucket is known at); a renormalised one at 2.0, so re-tempering is exercised."""
    if kind_of_teacher == "hidden":
        return dense, "tail"
    logits = dense.head.logits(dense.hidden)[:, :VOCAB]
    if kind_of_teacher == "logits":
        return logits, "tail"
    mode = kind_of_teacher.removeprefix("topk-")
    return TopKSignal.from_logits(logits, k=16, temperature=temperature if mode == "tail" else 2.0), mode


def _grads(total: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(total, inputs))


def _assert_matches_reference(hidden, head, targets, teacher, settings, chunk_size: int) -> None:
    """The chunked path's values and gradients (hidden states, head) against the plain path's."""
    ref = reference_linear_loss(hidden, head, targets, teacher, settings)
    fused = fused_linear_loss(hidden, head, targets, teacher, settings, chunk_size=chunk_size)
    for a, b in zip(fused, ref, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-5)
    inputs = [hidden, head.weight]
    for g_fused, g_ref in zip(_grads(fused[0], inputs), _grads(ref[0], inputs), strict=True):
        assert torch.allclose(g_fused, g_ref, atol=1e-5, rtol=1e-4), (g_fused - g_ref).abs().max()


@pytest.mark.parametrize("teacher_kind", ["hidden", "logits", "topk-tail", "topk-renormalize"])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_matches_reference(kind, teacher_kind):
    hidden, head, targets, dense = _problem(0)
    teacher, mode = _teacher(teacher_kind, dense, 1.7)
    settings = LossSettings(spec=DivergenceSpec(kind=kind, beta=0.3, alpha=0.2), temperature=1.7,
                            weights=LossWeights(ce=0.25, kd=0.75 * 1.7**2), vocab_size=VOCAB, topk_mode=mode)
    _assert_matches_reference(hidden, head, targets, teacher, settings, chunk_size=29)


def _coarse(logits: torch.Tensor, ids: torch.Tensor, temperature: float, mode: str) -> torch.Tensor:
    """The test's own top-k support from dense logits: p_T on the ids (+ the rest as one bucket, or renormalised)."""
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    top = log_p.gather(-1, ids)
    if mode == "renormalize":
        return top - top.logsumexp(-1, keepdim=True)
    return torch.cat([top, log_p.scatter(-1, ids, -torch.inf).logsumexp(-1, keepdim=True)], dim=-1)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("mode", ["tail", "renormalize"])
def test_chunked_topk_matches_the_coarse_grained_dense_teacher(kind, mode):
    """An outside twin for the top-k path: the expected loss is built here from the dense teacher's logits at the loss
    temperature, sharing no support or re-tempering code with the path under test."""
    hidden, head, targets, dense = _problem(6)
    temperature = 1.7
    teacher_logits = dense.head.logits(dense.hidden)[:, :VOCAB]
    signal, _ = _teacher(f"topk-{mode}", dense, temperature)
    settings = LossSettings(spec=DivergenceSpec(kind=kind, beta=0.3), temperature=temperature,
                            weights=LossWeights(ce=0.0, kd=1.0), vocab_size=VOCAB, topk_mode=mode)
    _total, _ce, kd = fused_linear_loss(hidden, head, targets, signal, settings, chunk_size=29)
    (grad,) = torch.autograd.grad(_total, hidden)

    h = hidden.detach().requires_grad_()
    log_p = _coarse(teacher_logits, signal.ids, temperature, mode)
    log_q = _coarse(head.logits(h)[:, :VOCAB], signal.ids, temperature, mode)
    p, q = log_p.exp(), log_q.exp()
    if kind == "forward_kl":
        expected = (p * (log_p - log_q)).sum()
    elif kind == "reverse_kl":
        expected = (q * (log_q - log_p)).sum()
    else:
        m = 0.3 * p + 0.7 * q
        expected = 0.3 * (p * (log_p - m.log())).sum() + 0.7 * (q * (log_q - m.log())).sum()
    (grad_expected,) = torch.autograd.grad(expected, h)
    assert kd.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(grad, grad_expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["jsd", "forward_kl"])  # forward_kl: the closed-form gradient, through the head
@pytest.mark.parametrize("head_kind", ["bias", "scale", "softcap"])
def test_chunked_matches_reference_for_every_head_shape(head_kind, kind):
    options = {"bias": {"bias": True}, "scale": {"scale": 0.0625}, "softcap": {"softcap": 3.0}}[head_kind]
    hidden, head, targets, dense = _problem(1, **options)
    settings = LossSettings(spec=DivergenceSpec(kind=kind, beta=0.5), temperature=1.3,
                            weights=LossWeights(ce=0.5, kd=0.5), vocab_size=VOCAB)
    ref = reference_linear_loss(hidden, head, targets, dense, settings)
    fused = fused_linear_loss(hidden, head, targets, dense, settings, chunk_size=50)
    assert fused[0].item() == pytest.approx(ref[0].item(), rel=1e-5)
    inputs = [hidden, head.weight] + ([head.bias] if head.bias is not None else [])
    for g_fused, g_ref in zip(_grads(fused[0], inputs), _grads(ref[0], inputs), strict=True):
        assert torch.allclose(g_fused, g_ref, atol=1e-5, rtol=1e-4)


def test_chunk_size_does_not_change_the_result_and_accumulation_adds_up():
    hidden, head, targets, dense = _problem(2)
    settings = LossSettings(spec=DivergenceSpec(), temperature=2.0, weights=LossWeights(ce=0.5, kd=2.0),
                            vocab_size=VOCAB)
    whole = fused_linear_loss(hidden, head, targets, dense, settings, chunk_size=N)[0]
    (g_whole,) = torch.autograd.grad(whole, head.weight)
    # two micro-batches, each backpropagated on its own: gradients accumulate to those of the whole batch
    head.weight.grad = None
    for rows in (slice(0, 50), slice(50, N)):
        part_teacher = TeacherHidden(dense.hidden[rows], dense.head)
        fused_linear_loss(hidden[rows], head, targets[rows], part_teacher, settings, chunk_size=7)[0].backward()
    assert torch.allclose(head.weight.grad, g_whole, atol=1e-5)


def test_ce_only_needs_no_teacher():
    hidden, head, targets, _ = _problem(3)
    settings = LossSettings(spec=DivergenceSpec(), temperature=1.0, weights=LossWeights(ce=1.0, kd=0.0),
                            vocab_size=VOCAB)
    total, _ce, kd = fused_linear_loss(hidden, head, targets, None, settings, chunk_size=40)
    expected = torch.nn.functional.cross_entropy(head.logits(hidden)[:, :VOCAB], targets, reduction="sum")
    assert total.item() == pytest.approx(expected.item(), rel=1e-5) and kd.item() == 0.0


@pytest.mark.parametrize("teacher_kind", ["hidden", "topk-tail", "topk-renormalize", "topk-full"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_closed_form_forward_kl_matches_the_autograd_chunk(temperature, teacher_kind):
    """The fast path (closed-form gradient) against its twin (autograd inside each chunk), both chunked, for a
    dense teacher and for top-k signals (tail bucket, renormalised, and k = vocabulary)."""
    hidden, head, targets, dense = _problem(4)
    if teacher_kind == "topk-full":
        teacher, mode = TopKSignal.from_logits(dense.head.logits(dense.hidden)[:, :VOCAB], k=VOCAB), "tail"
    else:
        teacher, mode = _teacher(teacher_kind, dense, temperature)
    _closed_form_matches_autograd(hidden, head, targets, teacher, DivergenceSpec(kind="forward_kl"), temperature,
                                  LossWeights(ce=0.3, kd=0.7 * temperature**2), mode)


def _closed_form_matches_autograd(hidden, head, targets, teacher, spec, temperature, weights, mode="tail"):
    """The chunked loss with closed-form gradients against the autograd chunk: values and gradients."""
    results = []
    for closed_form in (True, False):
        settings = LossSettings(spec=spec, temperature=temperature, weights=weights, vocab_size=VOCAB,
                                topk_mode=mode, closed_form=closed_form)
        out = fused_linear_loss(hidden, head, targets, teacher, settings, chunk_size=31)
        results.append((out, _grads(out[0], [hidden, head.weight])))
    (fast, fast_grads), (slow, slow_grads) = results
    for a, b in zip(fast, slow, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-5)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", [DivergenceSpec(kind="reverse_kl"), DivergenceSpec(kind="jsd", beta=0.5),
                                  DivergenceSpec(kind="jsd", beta=0.1, normalized=True),
                                  DivergenceSpec(kind="jsd", beta=1.0), DivergenceSpec(kind="jsd", beta=0.0)])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_closed_form_reverse_kl_and_jsd_match_the_autograd_chunk(temperature, spec):
    """The on-policy divergences with a dense teacher: closed-form gradients against autograd inside each chunk."""
    hidden, head, targets, dense = _problem(5)
    _closed_form_matches_autograd(hidden, head, targets, dense, spec, temperature, LossWeights(ce=0.2, kd=0.8))


@pytest.mark.parametrize("closed_form", [True, False])
def test_teacher_ruling_tokens_out_gives_finite_values(closed_form):
    """A teacher logit of −inf (a token it rules out) contributes 0 to the KL, on both chunk paths."""
    hidden, head, targets, dense = _problem(5)
    logits = dense.head.logits(dense.hidden)[:, :VOCAB].clone()
    logits[:, 100:200] = -torch.inf
    settings = LossSettings(spec=DivergenceSpec(kind="forward_kl"), temperature=1.0,
                            weights=LossWeights(ce=0.5, kd=0.5), vocab_size=VOCAB, closed_form=closed_form)
    total, _ce, kd = fused_linear_loss(hidden, head, targets, logits, settings, chunk_size=40)
    ref = reference_linear_loss(hidden, head, targets, logits, settings)
    assert torch.isfinite(kd) and kd.item() == pytest.approx(ref[2].item(), rel=1e-5)
    (grad,) = torch.autograd.grad(total, hidden)
    assert torch.isfinite(grad).all()


def test_auto_chunk_size_scales_with_the_vocabulary():
    from distill.losses.fused_linear import auto_chunk_size

    assert auto_chunk_size(49152) == 341 and auto_chunk_size(262144) == 64 and auto_chunk_size(512) == 8192


@pytest.mark.parametrize("teacher_kind", ["hidden", "topk-tail"])
def test_chunked_under_autocast_bf16_matches_the_fp32_reference(teacher_kind):
    """GPU readiness, checked on the CPU: under `torch.autocast(bfloat16)` the chunk's matrix multiplies run in bf16
    while the loss math stays fp32 (`LMHead.finish`), and the gradients reach fp32 parameters in fp32, within bf16's
    precision of the fp32 reference. The backward does no autocast-eligible work (it scales gradients made in the
    forward), so it needs no `custom_bwd`."""
    hidden, head, targets, dense = _problem(4)
    teacher, mode = _teacher(teacher_kind, dense, 1.0)
    settings = LossSettings(spec=DivergenceSpec(kind="forward_kl"), temperature=1.0,
                            weights=LossWeights(ce=0.5, kd=0.5), vocab_size=VOCAB, topk_mode=mode)
    ref = reference_linear_loss(hidden, head, targets, teacher, settings)[0]
    ref_grads = _grads(ref, [hidden, head.weight])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = fused_linear_loss(hidden, head, targets, teacher, settings, chunk_size=29)[0]
    assert fused.dtype == torch.float32 and fused.item() == pytest.approx(ref.item(), rel=2e-3)
    for got, want in zip(_grads(fused, [hidden, head.weight]), ref_grads, strict=True):
        assert got.dtype == torch.float32
        assert (got - want).abs().max() <= 2e-2 * want.abs().max()


@pytest.mark.parametrize(("teacher_kind", "kind"), [("hidden", "forward_kl"), ("hidden", "reverse_kl"),
                                                    ("logits", "jsd"), ("topk-tail", "forward_kl")])
@pytest.mark.parametrize("ce_weight", [0.0, 0.4])
def test_chunked_at_temperature_one_matches_reference(teacher_kind, kind, ce_weight):
    """At T = 1 the closed form shares softmax(z) between CE and KD (one softmax pass fewer): held to the reference,
    with and without a label term."""
    hidden, head, targets, dense = _problem(6)
    teacher, mode = _teacher(teacher_kind, dense, 1.0)
    settings = LossSettings(spec=DivergenceSpec(kind=kind, beta=0.3), temperature=1.0,
                            weights=LossWeights(ce=ce_weight, kd=1.0 - ce_weight), vocab_size=VOCAB, topk_mode=mode)
    _assert_matches_reference(hidden, head, targets, teacher, settings, chunk_size=31)
