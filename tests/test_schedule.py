"""The learning-rate schedule, and what a new max_steps on --resume does to it: continue smoothly while the rate is
still decaying, restart warm once it has finished — never the jump of the old cosine stretched to a new length."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from safetensors.torch import load_file
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from conftest import base_recipe, run_cli, write_recipe
from distill.training.metrics import read_metrics
from distill.training.schedule import Schedule, make_scheduler, schedule_of

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_the_base_schedule_is_transformers_cosine_with_warmup():
    ours = make_scheduler(_optimizer(), 10, 100, 0.1)
    theirs = get_cosine_with_min_lr_schedule_with_warmup(_optimizer(), num_warmup_steps=10, num_training_steps=100,
                                                         min_lr_rate=0.1)
    for _ in range(100):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-12)
        ours.step()
        theirs.step()


def test_extending_a_decaying_run_continues_from_the_current_rate():
    schedule = Schedule(warmup_steps=5, max_steps=100, min_ratio=0.0)
    before = [schedule(s) for s in range(51)]
    assert schedule.extend(50, 150, 200, warmup_steps=5) == "continues"
    after = [schedule(s) for s in range(50, 201)]
    assert [schedule(s) for s in range(51)] == before  # the past is unchanged
    assert after[0] == before[50]  # no jump at the resumed step
    assert all(a >= b for a, b in pairwise(after))  # decays monotonically …
    assert after[-1] == pytest.approx(0.0, abs=1e-12)  # … to the minimum at the new end
    assert max(abs(a - b) for a, b in pairwise(after)) < 0.02  # smoothly


def test_extending_a_finished_run_restarts_warm_instead_of_jumping():
    """The old behaviour: a finished 100-step run extended to 200 trained at 0 at step 101 and at about half the peak
    at step 102, the stretched cosine evaluated at the absolute step."""
    schedule = Schedule(warmup_steps=10, max_steps=100, min_ratio=0.0)
    assert schedule(100) == pytest.approx(0.0, abs=1e-12)
    assert schedule.extend(100, 100, 200, warmup_steps=10) == "restarts"
    rates = [schedule(s) for s in range(100, 201)]
    assert rates[:11] == pytest.approx([i / 10 for i in range(11)])  # the recipe's warm-up, back to the peak
    assert all(a >= b for a, b in pairwise(rates[10:]))  # then a cosine down …
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)  # … to the minimum at the new end
    assert max(abs(a - b) for a, b in pairwise(rates)) <= 0.1 + 1e-12


def test_the_segments_travel_with_the_schedulers_state():
    scheduler = make_scheduler(_optimizer(), 0, 10, 0.0)
    for _ in range(10):
        scheduler.step()
    schedule_of(scheduler).extend(10, 20, 30, warmup_steps=0)
    restored = make_scheduler(_optimizer(), 0, 30, 0.0)
    restored.load_state_dict(torch.load(_roundtrip(scheduler.state_dict()), weights_only=True))
    assert schedule_of(restored).segments == schedule_of(scheduler).segments
    assert [schedule_of(restored)(s) for s in range(31)] == [schedule_of(scheduler)(s) for s in range(31)]


def _roundtrip(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_extending_a_finished_run_trains_and_an_extended_run_resumes_exactly(tmp_path, text_data, tiny_teacher_dir):
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 8, "save_every": 4, "warmup_steps": 2,
                                                                "keep_checkpoints": 2})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert run_cli("train", str(path)).returncode == 0
    longer = run_cli("train", str(path), "--resume", "--set", "training.max_steps=16")
    assert longer.returncode == 0, longer.stderr
    assert "restarts from step 8" in longer.stdout
    rates = [m["lr"] for m in read_metrics(tmp_path / "run")]
    peak = recipe["training"]["lr"]
    assert rates[7] < 0.1 * peak  # the first run decayed …
    assert rates[8:11] == pytest.approx([0.0, peak / 2, peak])  # … the extension warms up again …
    assert all(a >= b for a, b in pairwise(rates[10:]))  # … and decays without a jump
    assert not any(math.isnan(r) for r in rates)
    straight = load_file(tmp_path / "run" / "student" / "model.safetensors")

    # resume the extended run from its step-12 checkpoint: the extension must be rebuilt exactly
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-00000012", "step-00000016"]
    import shutil

    shutil.rmtree(checkpoints[-1])
    shutil.rmtree(tmp_path / "run" / "student")
    again = run_cli("train", str(path), "--resume", "--set", "training.max_steps=16")
    assert again.returncode == 0, again.stderr
    assert [m["lr"] for m in read_metrics(tmp_path / "run")] == rates
    resumed = load_file(tmp_path / "run" / "student" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_the_fused_optimizer_takes_the_default_adamw_steps():
    """make_optimizer's fused AdamW (CPU) against torch's default AdamW, over steps with weight decay and warm
    moments: the same parameters to fp32 rounding."""
    from distill.training.schedule import make_optimizer

    g = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(37, 11, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = make_optimizer(a, 1e-2, (0.9, 0.95), 0.1, torch.device("cpu"))
    plain = torch.optim.AdamW(b, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in a]
        for params, opt in ((a, fused), (b, plain)):
            for p, grad in zip(params, grads, strict=True):
                p.grad = grad.clone()
            opt.step()
    for p, q in zip(a, b, strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5)


def test_resuming_from_an_unfused_checkpoint_keeps_the_fused_kernel():
    """Loading an optimizer state restores each group's `fused` too; `keep_fused` puts back the trainer's choice."""
    from distill.training.schedule import keep_fused, make_optimizer

    params = [torch.nn.Parameter(torch.randn(4, 3))]
    params[0].grad = torch.randn(4, 3)
    old = torch.optim.AdamW(params, lr=1e-3)
    old.step()
    fused = make_optimizer(params, 1e-3, (0.9, 0.95), 0.0, torch.device("cpu"))
    fused.load_state_dict(old.state_dict())
    assert fused.param_groups[0]["fused"] is None  # what loading alone does
    keep_fused(fused, fused.defaults["fused"])
    assert fused.param_groups[0]["fused"] is True
    assert make_optimizer(params, 1e-3, (0.9, 0.95), 0.0, torch.device("cpu"), loss_scaler=True).defaults["fused"] \
        is None  # fp16's scaler must see skipped steps
