"""The chunked loss's torch.compile path (`objective.compiled`) against its eager twin: values and gradients for
cross-entropy alone and for a dense teacher's forward KL at T = 1 and T = 2.5, with a padded head, a short last chunk
and tokens the teacher rules out; and proof that the compiler really ran (a silent fallback to eager would pass
any parity test)."""

from __future__ import annotations

import pytest
import torch

from distill.losses import DivergenceSpec
from distill.losses.fused_linear import LossSettings, LossWeights, TeacherHidden, fused_linear_loss
from distill.losses.lm_head import LMHead

N, H, V_MODEL, VOCAB = 101, 16, 520, 511  # chunks of 40, 40 and 21 tokens; a head padded past the vocabulary


def _problem():
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(N, H, generator=g, requires_grad=True)
    head = LMHead((torch.randn(V_MODEL, H, generator=g) * 0.5).requires_grad_())
    teacher = TeacherHidden(torch.randn(N, H, generator=g), LMHead(torch.randn(V_MODEL, H, generator=g) * 0.5))
    logits = teacher.head.logits(teacher.hidden)[:, :VOCAB].clone()
    logits[:, 50:60] = -torch.inf  # ruled out: 0 to the KL, finite gradients
    return hidden, head, torch.randint(0, VOCAB, (N,), generator=g), {"none": None, "hidden": teacher,
                                                                        "logits": logits}


@pytest.mark.parametrize(("teacher_kind", "temperature", "weights"), [
    ("none", 1.0, LossWeights(ce=1.0, kd=0.0)),
    ("hidden", 1.0, LossWeights(ce=0.5, kd=0.5)),
    ("logits", 2.5, LossWeights(ce=0.3, kd=0.7 * 2.5**2)),
    ("hidden", 1.0, LossWeights(ce=0.0, kd=1.0)),
])
def test_compiled_matches_eager(teacher_kind, temperature, weights):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # a fresh trace, whatever ran before: the counter below must move
    hidden, head, targets, teachers = _problem()
    results = []
    for compiled in (False, True):
        settings = LossSettings(spec=DivergenceSpec(kind="forward_kl"), temperature=temperature, weights=weights,
                                vocab_size=VOCAB, compiled=compiled)
        captured = counters["stats"]["calls_captured"]
        out = fused_linear_loss(hidden, head, targets, teachers[teacher_kind], settings, chunk_size=40)
        results.append((out, torch.autograd.grad(out[0], [hidden, head.weight])))
        assert (counters["stats"]["calls_captured"] > captured) == compiled  # compiled: the compiler traced it
    (eager, eager_grads), (fused, fused_grads) = results
    for a, b in zip(fused, eager, strict=True):
        assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-5)
    for a, b in zip(fused_grads, eager_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


def test_compiled_is_refused_with_the_reference_implementation():
    from pydantic import ValidationError

    from distill.recipe.objective import OffPolicyConfig

    with pytest.raises(ValidationError, match="implementation is `reference`"):
        OffPolicyConfig(compiled=True, implementation="reference")


@pytest.mark.parametrize("case", ["softcap", "bf16"])
def test_compiled_matches_eager_through_a_softcap_head_and_in_bf16(case):
    """The chunk's second route: logits that need a soft-cap (or a scale) or come in bf16 get their closed-form
    gradient from the compiled twin and then go back through the head by autograd — the gradient must come back in
    the logits' dtype, and agree with the eager route."""
    hidden, head, targets, teachers = _problem()
    dtype = torch.bfloat16 if case == "bf16" else torch.float32
    hidden = hidden.detach().to(dtype).requires_grad_()
    head = LMHead(head.weight.detach().to(dtype).requires_grad_(), softcap=30.0 if case == "softcap" else None)
    teacher = TeacherHidden(teachers["hidden"].hidden.to(dtype), LMHead(teachers["hidden"].head.weight.to(dtype)))
    results = []
    for compiled in (False, True):
        settings = LossSettings(spec=DivergenceSpec(kind="forward_kl"), temperature=1.0,
                                weights=LossWeights(ce=0.5, kd=0.5), vocab_size=VOCAB, compiled=compiled)
        out = fused_linear_loss(hidden, head, targets, teacher, settings, chunk_size=40)
        results.append((out, torch.autograd.grad(out[0], [hidden, head.weight])))
    (eager, eager_grads), (fused, fused_grads) = results
    tol = 2e-2 if case == "bf16" else 1e-5
    assert fused[0].item() == pytest.approx(eager[0].item(), rel=tol)
    for a, b in zip(fused_grads, eager_grads, strict=True):
        assert a.dtype == dtype and torch.allclose(a.float(), b.float(), atol=tol, rtol=tol), (a - b).abs().max()


def test_compiled_is_refused_where_it_would_be_ignored_and_a_failed_compiler_says_what_to_change(monkeypatch):
    from pydantic import ValidationError

    from distill.losses import compiled as compiled_module
    from distill.recipe.objective import HPDConfig

    with pytest.raises(ValidationError, match="hpd's reweighted loss has no compiled path"):
        HPDConfig(compiled=True)

    def no_compiler(*args):
        raise compiled_module.BackendCompilerFailed(lambda *a: None, RuntimeError("C++ compile error"), None)

    monkeypatch.setattr(compiled_module.torch, "compile", lambda fn, **kw: no_compiler)
    compiled_module.compiled.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"objective\.compiled: .* set objective\.compiled: false"):
            compiled_module.compiled("ce")(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0)
    finally:
        compiled_module.compiled.cache_clear()
