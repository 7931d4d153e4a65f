"""objectives/: the registry picks an objective by its recipe section, objectives return loss pieces, and the loop
sums and logs whatever terms come back — a new objective needs no change in the loop."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import base_recipe
from distill.builtin.corpus import tiny_stories
from distill.data.batch import Batch
from distill.data.example_stream import pack
from distill.data.formatting import encode_text
from distill.objectives import registry
from distill.objectives.offpolicy import OffPolicyObjective
from distill.objectives.pieces import LossPieces
from distill.recipe import OBJECTIVE_CONFIGS, OffPolicyConfig, validate_recipe
from distill.teachers.source import LiveTeacher
from distill.training.loop import train
from distill.training.metrics import read_metrics


@pytest.fixture(scope="module")
def models(tiny_teacher_dir):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval().requires_grad_(False)
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    with torch.no_grad():  # a student that differs from its teacher
        for parameter in student.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return teacher, student


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    docs = encode_text([{"text": t} for t in tiny_stories(10, seed=2)], tiny_tokenizer, "text")
    return Batch.of(pack(docs, 16)[:2], tiny_tokenizer.pad_token_id, [0, 1])


def test_the_registry_builds_the_objective_of_the_recipes_section(models, tiny_tokenizer):
    _, student = models
    objective = registry.build_objective(student, OffPolicyConfig(), len(tiny_tokenizer), with_teacher=True)
    assert isinstance(objective, OffPolicyObjective) and objective.needs_teacher

    class Unimplemented(OffPolicyConfig):
        pass

    with pytest.raises(TypeError, match="no objective implements Unimplemented"):
        registry.build_objective(student, Unimplemented(), len(tiny_tokenizer), with_teacher=True)


def test_every_objective_kind_of_the_recipe_has_an_implementation_and_no_other():
    assert set(registry.OBJECTIVES) == set(OBJECTIVE_CONFIGS.values())


def test_the_baseline_is_the_same_objective_with_alpha_1_and_ignores_a_signal(models, batch, tiny_tokenizer):
    teacher, student = models
    vocab = len(tiny_tokenizer)
    signal = LiveTeacher(teacher, vocab, "hidden").signal(batch)
    baseline = OffPolicyObjective(student, OffPolicyConfig(alpha=1.0), vocab, with_teacher=True)
    with torch.no_grad():
        pieces = baseline(batch, signal)
        alone = baseline(batch, None)
    assert not baseline.needs_teacher
    assert pieces.count == batch.n_targets()
    assert pieces.terms["kd"] == 0.0
    assert torch.equal(pieces.total, pieces.terms["ce"]) and torch.equal(pieces.total, alone.total)
    kd = OffPolicyObjective(student, OffPolicyConfig(alpha=0.0), vocab, with_teacher=True)
    with torch.no_grad():
        assert kd(batch, signal).terms["kd"] > 0.0


class _WithExtraTerm(OffPolicyObjective):
    """An objective of another shape: one more named term (here, the count of targets predicted right)."""

    def forward(self, batch, signal=None):
        pieces = super().forward(batch, signal)
        return LossPieces(pieces.total, pieces.count, {**pieces.terms, "extra": pieces.count.double() * 0.5})


def test_the_loop_logs_whatever_terms_an_objective_returns(tmp_path, text_data, tiny_teacher_dir, monkeypatch):
    monkeypatch.setitem(registry.OBJECTIVES, OffPolicyConfig, _WithExtraTerm)
    recipe = validate_recipe(base_recipe(text_data, tmp_path / "run", training={
        "max_steps": 2, "batch_size": 4, "micro_batch_size": 2, "log_every": 1}))
    train(recipe)
    rows = read_metrics(tmp_path / "run")
    assert [row["extra"] for row in rows] == [0.5, 0.5]  # Σ (0.5 × count) / global count
    assert list(rows[0])[:4] == ["step", "loss", "ce", "kd"]
