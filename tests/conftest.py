"""Shared fixtures: everything is built in-process (tiny BPE tokenizer, tiny Llama models); nothing from a hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def distill_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session cache so built-ins are built once per test run and never touch the user's cache."""
    path = tmp_path_factory.mktemp("distill-cache")
    os.environ["DISTILL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_teacher_dir(distill_cache: Path) -> Path:
    """The `builtin:tiny-teacher` folder (a briefly trained 4-layer Llama and its BPE tokenizer)."""
    from distill.builtin.registry import materialize

    return materialize("builtin:tiny-teacher", "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_teacher_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_teacher_dir)


@pytest.fixture()
def text_data(tmp_path: Path) -> Path:
    """A small JSONL of `text` records."""
    from distill.builtin.corpus import tiny_stories

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_stories(200, seed=3)))
    return path


def base_recipe(data: Path, output_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small valid recipe (tiny teacher, 2 copied layers); `sections` update its sections key by key."""
    recipe: dict[str, Any] = {
        "seed": 0,
        "teacher": {"model": "builtin:tiny-teacher"},
        "student": {"from_teacher": {"layers": [0, 3]}},
        "data": {"train": str(data), "format": "text", "max_length": 32},
        "objective": {"alpha": 0.5, "temperature": 2.0},
        "training": {"output_dir": str(output_dir), "max_steps": 4, "batch_size": 4, "micro_batch_size": 4,
                     "lr": 1e-3, "save_every": 2, "log_every": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(recipe.get(name), dict):
            recipe[name].update(values)
        else:
            recipe[name] = values
    return recipe


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `python -m distill ARGS` in a subprocess, as a user would (from `cwd`, the repository by default)."""
    return subprocess.run(
        [sys.executable, "-m", "distill", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def kill_9_when(ready: Any, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """Start `python -m distill ARGS`, wait until `ready()` is true, then SIGKILL its whole process group — a kill
    in the middle of the work, as a crash or `kill -9` would make it. Returns what the process wrote to stderr
    (to check it for secrets); fails when the job ended before it could be killed (give it more work)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the job ended before it could be killed; give it more work\n{stderr}"
    return stderr.decode(errors="replace")


def accelerate_launch(n: int, *args: str, port: int = 29531) -> subprocess.CompletedProcess:
    """`accelerate launch --cpu --num_processes N -m distill ARGS`, as the README tells users to."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return subprocess.run(
        [str(accelerate), "launch", "--quiet", "--cpu", "--num_processes", str(n), "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distill", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "MASTER_PORT": str(port)},
    )


def max_weight_difference(run_a: Path, run_b: Path) -> float:
    """The largest absolute difference between two runs' final students (0.0: bitwise the same weights); the two
    must hold the same tensors."""
    import torch
    from safetensors.torch import load_file

    a = load_file(run_a / "student" / "model.safetensors")
    b = load_file(run_b / "student" / "model.safetensors")
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].double() - b[k].double()).abs().max()) if not torch.equal(a[k], b[k]) else 0.0
               for k in a)
