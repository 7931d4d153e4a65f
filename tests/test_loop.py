"""`distill train` end to end, as a user runs it: the tiny recipe, exact resume after kill -9, NaN stops,
gradient accumulation invariance, and refusing to mix up runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import REPO, base_recipe, max_weight_difference, run_cli, write_recipe
from distill.training.metrics import read_metrics


def _losses(run_dir: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run_dir)]


def test_tiny_recipe_trains_a_student_transformers_loads(tmp_path, tiny_teacher_dir):
    out = tmp_path / "tiny"
    result = run_cli("train", "examples/recipes/tiny.yaml", "--set", f"training.output_dir={out}")
    assert result.returncode == 0, result.stderr
    # not a terminal (captured, as under nohup or SLURM): plain lines from the first logged step (log_every 5) on
    lines = [line for line in result.stdout.splitlines() if line.startswith("train ")]
    assert lines[0].startswith("train 5/60 (8%) loss ") and " tok/s · elapsed " in lines[0], result.stdout
    assert lines[-1].startswith("train 60/60 (100%) loss ") and "━" not in result.stdout
    student = AutoModelForCausalLM.from_pretrained(out / "student")
    tokenizer = AutoTokenizer.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 2
    assert (out / "student" / "model.safetensors").exists()
    metrics = read_metrics(out)
    assert metrics[-1]["step"] == 60
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert (out / "recipe.yaml").exists() and list((out / "tensorboard").glob("events.out.tfevents.*"))
    ids = tokenizer("anna had two apples", return_tensors="pt").input_ids
    assert student.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


def test_kill_9_then_resume_gives_bitwise_the_same_student(tmp_path, text_data, tiny_teacher_dir):
    """The student draws random numbers (GPT-2's dropout, 0.1 by default) and ties its embeddings to its head, so a
    resume that did not restore the RNG states, or saved a tied weight twice, would not give the same weights."""
    recipe = base_recipe(text_data, tmp_path / "killed", training={
        "max_steps": 120, "batch_size": 8, "micro_batch_size": 4, "save_every": 25, "log_every": 1,
        "warmup_steps": 10, "lr": 2e-3})
    recipe["student"] = {"config": {"model_type": "gpt2", "n_embd": 48, "n_layer": 2, "n_head": 2, "n_positions": 128,
                                    "bos_token_id": 0, "eos_token_id": 0}}
    recipe["data"]["max_length"] = 64
    path = write_recipe(tmp_path / "recipe.yaml", recipe)

    reference = run_cli("train", str(path), "--set", f"training.output_dir={tmp_path / 'straight'}")
    assert reference.returncode == 0, reference.stderr

    proc = subprocess.Popen([sys.executable, "-m", "distill", "train", str(path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if lines and json.loads(lines[-1])["step"] >= 60:  # past the checkpoint at 50, before the one at 75
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "student").exists()

    resumed = run_cli("train", str(path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout

    assert max_weight_difference(tmp_path / "straight", tmp_path / "killed") == 0.0, \
        "resumed weights differ from the uninterrupted run"
    # the metrics describe one trajectory: every step once, identical to the uninterrupted run
    assert [m["step"] for m in read_metrics(tmp_path / "killed")] == list(range(1, 121))
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "straight")


def test_nan_loss_stops_the_run_naming_the_step(tmp_path, text_data, tiny_teacher_dir):
    broken = tmp_path / "broken-student"
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "layers.1.mlp.down_proj" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})

    recipe = base_recipe(text_data, tmp_path / "run")
    recipe["student"] = {"model": str(broken)}
    result = run_cli("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: loss became nan at step 1")
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert not (tmp_path / "run" / "student").exists()


def test_gradient_accumulation_matches_one_big_batch(tmp_path, text_data, tiny_teacher_dir):
    """Same global batch, split 1 × 8 or 4 × 2 micro-batches: same loss trajectory, same weights (to fp32 noise).
    Packing is off so sequences have different numbers of valid tokens, which per-micro-batch averaging gets wrong."""
    runs = {}
    for micro in (8, 2):
        recipe = base_recipe(text_data, tmp_path / f"micro{micro}", training={
            "max_steps": 5, "batch_size": 8, "micro_batch_size": micro})
        recipe["data"].update({"packing": False, "max_length": 48})
        result = run_cli("train", str(write_recipe(tmp_path / f"m{micro}.yaml", recipe)))
        assert result.returncode == 0, result.stderr
        runs[micro] = tmp_path / f"micro{micro}"
    assert _losses(runs[8]) == pytest.approx(_losses(runs[2]), rel=1e-5)
    a, b = (load_file(runs[m] / "student" / "model.safetensors") for m in (8, 2))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_existing_run_is_not_overwritten_and_resume_checks_the_recipe(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    assert run_cli("train", str(path)).returncode == 0
    again = run_cli("train", str(path))
    assert again.returncode == 2 and "--resume" in again.stderr and "training.output_dir" in again.stderr
    changed = run_cli("train", str(path), "--resume", "--set", "objective.temperature=3.0")
    assert changed.returncode == 2
    assert "objective.temperature" in changed.stderr
    # allowed: continue longer, and keep the teacher split across processes (on one process it stays whole)
    longer = run_cli("train", str(path), "--resume", "--set", "training.max_steps=6", "--set", "teacher.shard=true")
    assert longer.returncode == 0, longer.stderr
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]


def test_save_final_false_leaves_only_the_student(tmp_path, text_data, tiny_teacher_dir):
    """A run that needs only its student (a sweep, a benchmark's thief) skips the last checkpoint; a resume is then
    refused with the reason rather than silently starting over."""
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 2, "save_every": 5, "save_final": False})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    result = run_cli("train", str(path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))
    resumed = run_cli("train", str(path), "--resume", "--set", "training.max_steps=4")
    assert resumed.returncode == 2 and "no checkpoint to resume from" in resumed.stderr


def test_fresh_student_from_a_config_without_a_teacher(tmp_path, text_data, tiny_teacher_dir):
    """(b) a fresh architecture; alpha = 1 is the no-distillation baseline and needs no teacher, only a tokenizer."""
    recipe = base_recipe(text_data, tmp_path / "run", objective={"alpha": 1.0})
    recipe.pop("teacher")
    recipe["tokenizer"] = "builtin:tiny-teacher"
    recipe["student"] = {"config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}}
    result = run_cli("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.returncode == 0, result.stderr
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run" / "student")
    assert student.config.hidden_size == 32 and student.config.vocab_size == len(tokenizer)
    assert all(m["kd"] == 0.0 for m in read_metrics(tmp_path / "run"))


def test_a_corrupted_checkpoint_is_refused_on_resume(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    assert run_cli("train", str(path)).returncode == 0
    latest = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]
    blob = bytearray((latest / "optimizer.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (latest / "optimizer.pt").write_bytes(bytes(blob))
    result = run_cli("train", str(path), "--resume", "--set", "training.max_steps=6")
    assert result.returncode == 2
    assert "optimizer.pt is corrupted" in result.stderr and len(result.stderr.strip().splitlines()) == 1
