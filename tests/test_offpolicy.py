"""The Hinton objective: KD is zero for identical models, positive otherwise, and only the student gets gradients."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from distill.data.batch import Batch, collate
from distill.data.example_stream import pack
from distill.data.formatting import encode_text
from distill.losses import divergence, token_divergence
from distill.models import copy_teacher_layers
from distill.objectives.offpolicy import OffPolicyObjective
from distill.recipe import ObjectiveConfig
from distill.teachers.source import LiveTeacher


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    model.eval().requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    from distill.builtin.corpus import tiny_stories

    docs = encode_text([{"text": t} for t in tiny_stories(20, seed=11)], tiny_tokenizer, "text")
    return collate(pack(docs, 24)[:4], tiny_tokenizer.pad_token_id)


def offpolicy(student, teacher, batch, cfg, vocab):
    batch = Batch(**batch)
    source = None if teacher is None else LiveTeacher(
        teacher, vocab, "hidden" if cfg.implementation == "chunked" else "logits")
    objective = OffPolicyObjective(student, cfg, vocab, with_teacher=source is not None)
    return objective(batch, source.signal(batch) if source is not None else None).as_dict()


IMPLEMENTATIONS = pytest.mark.parametrize("implementation", ["chunked", "reference"])


def test_forward_kl_matches_hand_computation():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.5, 0.25, 0.25])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist(), strict=True))
    value = token_divergence(q.log()[None], p.log()[None])
    assert value.item() == pytest.approx(expected, abs=1e-6)
    # temperature softens both: KL of softmax(z/T)
    t = 2.0
    p_t, q_t = torch.softmax(p.log() / t, -1), torch.softmax(q.log() / t, -1)
    expected_t = (p_t * (p_t / q_t).log()).sum().item()
    assert token_divergence(q.log()[None], p.log()[None], temperature=t).item() == pytest.approx(expected_t, abs=1e-6)


def test_divergence_mean_over_mask_only():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = True
    expected = (token_divergence(s[0, 1], t[0, 1]) + token_divergence(s[1, 3], t[1, 3])) / 2
    assert divergence(s, t, mask=mask).item() == pytest.approx(expected.item(), rel=1e-6)


@IMPLEMENTATIONS
def test_kd_is_zero_for_the_same_model(teacher, batch, tiny_tokenizer, implementation):
    student = copy_teacher_layers(teacher, list(range(teacher.config.num_hidden_layers)))
    cfg = ObjectiveConfig(alpha=0.0, temperature=2.0, implementation=implementation)
    sums = offpolicy(student, teacher, batch, cfg, len(tiny_tokenizer))
    assert sums["n_targets"] > 0
    assert abs(sums["kd"].item()) < 1e-5 * sums["n_targets"]
    assert abs(sums["total"].item()) < 1e-4


@IMPLEMENTATIONS
def test_kd_positive_and_gradients_reach_the_student_only(teacher, batch, tiny_tokenizer, implementation):
    student = copy_teacher_layers(teacher, [0, 3])
    student.train()
    cfg = ObjectiveConfig(alpha=0.3, temperature=2.0, implementation=implementation)
    sums = offpolicy(student, teacher, batch, cfg, len(tiny_tokenizer))
    assert sums["kd"].item() > 0
    expected_total = 0.3 * sums["ce"] + 0.7 * 4.0 * sums["kd"]
    assert sums["total"].item() == pytest.approx(expected_total.item(), rel=1e-5)
    sums["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


@IMPLEMENTATIONS
def test_padded_vocab_compares_real_tokens_only(teacher, batch, tiny_tokenizer, implementation):
    """Teacher and student embeddings padded to different widths: logits are cut to the tokenizer's size."""
    student = copy_teacher_layers(teacher, list(range(teacher.config.num_hidden_layers)))
    student.resize_token_embeddings(teacher.config.vocab_size + 64)  # wider, random extra rows
    assert student.get_output_embeddings().weight.shape[0] != teacher.get_output_embeddings().weight.shape[0]
    cfg = ObjectiveConfig(alpha=0.0, implementation=implementation)
    sums = offpolicy(student, teacher, batch, cfg, len(tiny_tokenizer))
    assert abs(sums["kd"].item()) < 1e-5 * sums["n_targets"]


@IMPLEMENTATIONS
def test_alpha_one_needs_no_teacher(batch, teacher, tiny_tokenizer, implementation):
    student = copy_teacher_layers(teacher, [0, 1])
    cfg = ObjectiveConfig(alpha=1.0, implementation=implementation)
    sums = offpolicy(student, None, batch, cfg, len(tiny_tokenizer))
    assert sums["kd"].item() == 0.0
    assert sums["total"].item() == pytest.approx(sums["ce"].item())


def test_chunked_and_reference_objectives_agree_on_a_real_model(teacher, batch, tiny_tokenizer):
    """Model-level parity: the chunked path (hidden states + head) against the models' own full-logit forward."""
    results = {}
    for implementation in ("chunked", "reference"):
        student = copy_teacher_layers(teacher, [0, 3])
        cfg = ObjectiveConfig(alpha=0.4, temperature=1.5, divergence="jsd", beta=0.3, implementation=implementation,
                              chunk_size=13)
        sums = offpolicy(student, teacher, batch, cfg, len(tiny_tokenizer))
        sums["total"].backward()
        results[implementation] = (sums, [p.grad.clone() for p in student.parameters()])
    (a, grads_a), (b, grads_b) = results["chunked"], results["reference"]
    for key in ("total", "ce", "kd"):
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-5)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(grads_a, grads_b, strict=True))


def test_check_head_accepts_a_student_with_dropout_and_keeps_its_mode(tiny_tokenizer):
    """A GPT-2-config student (dropout 0.1 everywhere) was refused as "not LM-head(last hidden state)": the check
    compared two forward passes in train mode, with different dropout masks."""
    from transformers import AutoConfig

    from distill.losses.lm_head import check_head

    config = AutoConfig.for_model("gpt2", vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2, n_head=2,
                                  n_positions=64, bos_token_id=0, eos_token_id=0)
    student = AutoModelForCausalLM.from_config(config)
    assert config.resid_pdrop == 0.1
    student.train()
    check_head(student, "student")
    assert student.training
    student.eval()
    check_head(student, "student")
    assert not student.training
