"""The run folder (`training.output_dir`): what distill writes there, when a run may start, resume or start over.

`--overwrite` once deleted whatever folder `output_dir` named: with `output_dir: .` it took the user's data, models
and recipe with it. Now distill deletes only what it wrote, and only in a folder it recognises as a run (a
`recipe.yaml` it can read, nothing but run entries beside it); anything else is refused with the names it found.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from distill.errors import CheckpointError
from distill.locking import LOCK_NAME
from distill.recipe import Recipe, validate_recipe
from distill.training import checkpoint

RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
STUDENT = "student"
# everything a run writes; nothing else is ever deleted
RUN_ENTRIES = {RECIPE, METRICS, METRICS + ".tmp", STUDENT, "." + STUDENT + ".tmp", "checkpoints", "tensorboard",
               LOCK_NAME}

# Training fields that may differ on --resume. Only max_steps changes the computation: the learning-rate schedule is
# extended from the resumed step on (training/schedule.py).
RESUMABLE_CHANGES = {"max_steps", "save_every", "log_every", "keep_checkpoints"}


def make_run_dir(run_dir: Path) -> None:
    """Create the folder, or say in one line why it cannot be written (a file, no permission)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"training.output_dir: {run_dir} is a file, not a folder; choose another output_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"training.output_dir: cannot write to {run_dir} ({exc.strerror or exc}); choose a "
                              "folder you can write to") from None


def foreign_entries(run_dir: Path) -> list[str]:
    """Names in the folder that a run does not write."""
    return sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES) if run_dir.is_dir() else []


def is_run_dir(run_dir: Path) -> bool:
    """A folder distill trained into: its recipe.yaml reads as a recipe, and it holds nothing a run does not write."""
    if foreign_entries(run_dir) or not (run_dir / RECIPE).is_file():
        return False
    try:
        raw = yaml.safe_load((run_dir / RECIPE).read_text(encoding="utf-8"))
        validate_recipe(raw, source=str(run_dir / RECIPE))
    except Exception:  # unreadable, not YAML, not a recipe: not ours
        return False
    return True


def clear_run(run_dir: Path) -> None:
    """Delete what an earlier run wrote (never the lock, never anything else)."""
    for name in RUN_ENTRIES - {LOCK_NAME}:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def prepare_run_dir(recipe: Recipe, resume: bool, overwrite: bool) -> Path | None:
    """Check the run folder (main process, under its lock); return the checkpoint to resume from, if any."""
    run_dir = Path(recipe.training.output_dir)
    existing = checkpoint.list_checkpoints(run_dir / "checkpoints")
    if resume and existing:
        _check_resumable(recipe, existing[-1])
        return existing[-1]
    foreign = foreign_entries(run_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CheckpointError(f"training.output_dir: {run_dir} holds files a run does not write ({shown}); distill "
                              "trains only into a new or empty folder, or one of its own runs (and --overwrite "
                              "deletes only those). Choose another output_dir")
    has_run = bool(existing) or (run_dir / STUDENT).exists()
    if has_run and not overwrite and not resume:
        raise CheckpointError(f"training.output_dir: {run_dir} already holds a run; pass --resume to continue it, "
                              "--overwrite to start over, or choose another output_dir")
    if any(run_dir.glob("*")) and (run_dir / RECIPE).exists() and not is_run_dir(run_dir):
        raise CheckpointError(f"training.output_dir: {run_dir / RECIPE} is not a distill recipe, so {run_dir} is "
                              "not a run folder distill wrote; choose another output_dir")
    clear_run(run_dir)  # a run that never reached a checkpoint, or --overwrite: start from nothing
    return None


def _check_resumable(recipe: Recipe, ckpt: Path) -> None:
    saved = validate_recipe(yaml.safe_load((ckpt / RECIPE).read_text()), source=str(ckpt / RECIPE))
    old, new = saved.model_dump(mode="json"), recipe.model_dump(mode="json")
    for section in (old, new):
        for key in RESUMABLE_CHANGES:
            section["training"].pop(key)
    diffs = [f"{section}.{key}" for section in new if isinstance(new[section], dict)
             for key in set(new[section]) | set(old.get(section) or {})
             if (old.get(section) or {}).get(key) != new[section].get(key)]
    diffs += [key for key in new if not isinstance(new[key], dict) and old.get(key) != new[key]]
    if diffs:
        raise CheckpointError(f"--resume: the recipe differs from the one {ckpt} was trained with in "
                              f"{', '.join(sorted(diffs))}; restore it or start a new output_dir")
