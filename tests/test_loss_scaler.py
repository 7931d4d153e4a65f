"""fp16's dynamic loss scaler in the training loop: an overflow skips the step (the schedule does not move), the run
goes on, repeated overflow stops it, and the scaler's state is checkpointed so a resume is exact.

accelerate runs fp16 only on accelerators, and this machine has none; so the tests give the loop what accelerate
gives it on a GPU — a `GradScaler` — and make the gradients overflow the way fp16 does: any scaled gradient beyond
fp16's largest value (65504) becomes inf. The loop's code path is the GPU's; only the overflow is simulated.
"""

from __future__ import annotations

import shutil
from itertools import pairwise

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import distill.training.loop as loop
import distill.training.setup as setup
from conftest import base_recipe
from distill.errors import TrainingError
from distill.recipe import validate_recipe
from distill.training.metrics import read_metrics

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")

FP16_MAX = 65504.0


class _ScaledAccelerator(Accelerator):
    init_scale = 2.0**24

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=self.init_scale, growth_interval=3)


@pytest.fixture()
def fp16_like(monkeypatch):
    """The loop gets a loss scaler, and scaled gradients overflow past fp16's range."""
    build = setup.build_student

    def overflowing_student(*args, **kwargs):
        student = build(*args, **kwargs)
        for p in student.parameters():
            p.register_hook(lambda g: torch.where(g.abs() > FP16_MAX, torch.inf, g))
        return student

    monkeypatch.setattr(loop, "Accelerator", _ScaledAccelerator)
    monkeypatch.setattr(setup, "build_student", overflowing_student)
    return _ScaledAccelerator


def test_an_overflow_skips_the_step_and_the_run_goes_on(tmp_path, text_data, tiny_teacher_dir, fp16_like):
    """It used to stop at the scaler's first overflow with "gradient norm became inf"."""
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 12, "save_every": 100})
    loop.train(validate_recipe(recipe))
    rows = read_metrics(tmp_path / "run")
    skipped = [r for r in rows if r["skipped"]]
    taken = [r for r in rows if not r["skipped"]]
    assert skipped and taken, [r["loss_scale"] for r in rows]
    assert all(r["grad_norm"] is None for r in skipped) and all(r["grad_norm"] > 0 for r in taken)
    # the scale halves on each overflow; the schedule only moves on steps that were taken
    for before, after in pairwise(rows):
        if before["skipped"]:
            assert after["loss_scale"] == before["loss_scale"] / 2 and after["lr"] == before["lr"]
    cosine = loop.make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3), 0, 12, 0.0)
    expected = []
    for _ in taken:
        expected.append(cosine.get_last_lr()[0])
        cosine.step()
    assert [r["lr"] for r in taken] == pytest.approx(expected)


def test_repeated_overflow_stops_the_run(tmp_path, text_data, tiny_teacher_dir, fp16_like, monkeypatch):
    monkeypatch.setattr(fp16_like, "init_scale", 2.0**60)  # far too high: 20 halvings are not enough
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 30, "save_every": 100})
    with pytest.raises(TrainingError, match="overflowed 20 steps in a row"):
        loop.train(validate_recipe(recipe))


def test_the_loss_scale_is_checkpointed_so_an_fp16_resume_is_exact(tmp_path, text_data, tiny_teacher_dir,
                                                                   fp16_like):
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 14, "save_every": 7})
    loop.train(validate_recipe(recipe))
    straight = read_metrics(tmp_path / "run")
    weights = load_file(tmp_path / "run" / "student" / "model.safetensors")
    assert any(r["skipped"] for r in straight[7:]) or len({r["loss_scale"] for r in straight[7:]}) > 1

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000014")
    shutil.rmtree(tmp_path / "run" / "student")
    loop.train(validate_recipe(recipe), resume=True)
    assert read_metrics(tmp_path / "run") == [{**r, "tokens_per_s": a["tokens_per_s"]}
                                              for r, a in zip(straight, read_metrics(tmp_path / "run"), strict=True)]
    resumed = load_file(tmp_path / "run" / "student" / "model.safetensors")
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_extending_an_fp16_run_continues_from_where_its_scheduler_stands(tmp_path, text_data, tiny_teacher_dir,
                                                                        fp16_like):
    """The scheduler counts the steps taken, fewer than the steps run when the scaler skipped some; an extension
    anchored at the step number would first run the old schedule's tail, then jump."""
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 10, "save_every": 10})
    loop.train(validate_recipe(recipe))
    assert any(r["skipped"] for r in read_metrics(tmp_path / "run"))
    recipe["training"]["max_steps"] = 20
    loop.train(validate_recipe(recipe), resume=True)
    taken = [r["lr"] for r in read_metrics(tmp_path / "run") if not r["skipped"]]
    assert all(a >= b for a, b in pairwise(taken)), taken  # no warm-up: non-increasing throughout, no jump
    assert taken[-1] < 0.2 * taken[0]
