"""Resumable checkpoints, written atomically and verified on load.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding the student's weights (safetensors), the optimizer,
scheduler (with its schedule segments) and, with fp16, loss-scaler states, every process's RNG states, the training
state (step, examples and tokens seen) and the recipe. It is written under a temporary name and renamed into place
once complete; `manifest.json`, written last, holds a SHA-256 of every file and is checked before a resume, so a
half-written or corrupted checkpoint is never used.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from distill.atomic import commit_folder, temporary_name
from distill.checksum import file_sha256
from distill.errors import CheckpointError
from distill.results.layout import RECIPE

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainState:
    step: int  # optimizer steps completed
    examples_seen: int
    tokens_seen: int
    world_size: int
    format_version: int = FORMAT_VERSION
    skipped_steps: int = 0  # steps the fp16 loss scaler skipped (overflowed gradients)
    batches: dict[str, Any] | None = None  # the batch source's state_dict (older checkpoints: none, the plan's step)
    validation: dict[str, Any] | None = None  # keep_best's state (training/validation.py BestTracker)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (those with a manifest), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "manifest.json").exists()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in types `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def temporary_path(root: Path, step: int) -> Path:
    """Where a checkpoint is written before it is renamed into place; never picked up by a resume."""
    return root / temporary_name(checkpoint_name(step))


def begin(tmp: Path) -> None:
    """Create the (empty) temporary folder of a checkpoint (main process)."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)


def write_main(tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               state: TrainState, recipe_yaml: str, scaler: Any = None) -> None:
    """The parts only the main process writes: weights, optimizer, scheduler and loss scaler, state, recipe."""
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    if scaler is not None:  # fp16: the current loss scale and its growth tracker, or a resume is not exact
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
    (tmp / RECIPE).write_text(recipe_yaml)


def write_rank(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")


def commit(tmp: Path, root: Path, step: int, keep: int) -> Path:
    """Hash every file into manifest.json, rename into place, and prune old checkpoints (main process)."""
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"format_version": FORMAT_VERSION, "step": step,
                "files": {name: file_sha256(tmp / name) for name in files}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    final = root / checkpoint_name(step)
    commit_folder(tmp, final)  # permissions, fsync, replace any old folder of that step, rename
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(path: Path) -> dict[str, Any]:
    """Check every file against the manifest; raise `CheckpointError` naming the first bad one."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable manifest.json ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {manifest.get('format_version')} is not "
                              f"{FORMAT_VERSION}; it was written by another version of distill")
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.exists():
            raise CheckpointError(f"checkpoint {path}: {name} is missing; delete this checkpoint to resume from "
                                  "an earlier one")
        if file_sha256(file) != digest:
            raise CheckpointError(f"checkpoint {path}: {name} is corrupted (checksum mismatch); delete this "
                                  "checkpoint to resume from an earlier one")
    return manifest


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int,
         scaler: Any = None) -> TrainState:
    """Restore everything in place; returns the training state to continue from."""
    verify(path)
    state = TrainState(**json.loads((path / "state.json").read_text()))
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the student (missing {list(missing)[:3]}, "
                              f"unexpected {list(unexpected)[:3]}); was the student changed?")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if scaler is not None and (path / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng_file = path / f"rng-{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state
