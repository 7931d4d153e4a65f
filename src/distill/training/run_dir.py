"""The run folder (`training.output_dir`): what distill writes there, when a run may start, resume or start over.

`--overwrite` once deleted whatever folder `output_dir` named: with `output_dir: .` it took the user's data, models
and recipe with it. Now a run starts only in a new or empty folder or in a folder distill recognises as one of its
runs — one holding the marker a run writes first (`.distill-run`), or, for runs made before the marker existed, a
recipe.yaml that reads as a recipe beside a distill checkpoint. Anything else is refused, naming what is there.
Starting over deletes only the entries a run writes (and in `checkpoints/` only distill's checkpoints); other files
in a recognised run (an eval.json, a report) are left where they are.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from distill import __version__
from distill.atomic import temporary_name
from distill.errors import CheckpointError
from distill.locking import LOCK_NAME
from distill.recipe import Recipe, validate_recipe
from distill.recipe.portable import with_absolute_paths
from distill.results.layout import CHECKPOINTS, MARKER, RECIPE, RUN_ENTRIES, STUDENT
from distill.training import checkpoint

__all__ = ["clear_run", "contents", "is_run_dir", "prepare_run_dir"]  # the files' names: distill.results.layout
# nobody's content: the lock, what file browsers leave behind
_IGNORED = {LOCK_NAME, ".DS_Store", "Thumbs.db", ".ipynb_checkpoints"}

# Training fields that may differ on --resume. Only max_steps changes the computation: the learning-rate schedule is
# extended from the resumed step on (training/schedule.py).
RESUMABLE_CHANGES = {"max_steps", "save_every", "save_final", "log_every", "keep_checkpoints", "trackers", "run_name",
                     "eval_every", "early_stopping_patience"}


def contents(run_dir: Path) -> list[str]:
    """What the folder holds, apart from entries that are nobody's content."""
    return sorted(p.name for p in run_dir.iterdir() if p.name not in _IGNORED) if run_dir.is_dir() else []


def is_run_dir(run_dir: Path) -> bool:
    """A folder distill trained into: its marker, or (runs made before the marker) a readable recipe.yaml beside a
    checkpoint with distill's manifest."""
    if (run_dir / MARKER).is_file():
        return True
    if not any((run_dir / CHECKPOINTS).glob("step-*/manifest.json")):
        return False
    try:
        validate_recipe(yaml.safe_load((run_dir / RECIPE).read_text(encoding="utf-8")), source=str(run_dir / RECIPE))
    except Exception:  # unreadable, not YAML, not a recipe: not ours
        return False
    return True


def clear_run(run_dir: Path) -> None:
    """Delete what an earlier run wrote, and nothing else."""
    for name in RUN_ENTRIES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for path in [*root.glob("step-*"), *root.glob(temporary_name("step-*"))]:
            shutil.rmtree(path)
        if not any(root.iterdir()):
            root.rmdir()


def prepare_run_dir(recipe: Recipe, resume: bool, overwrite: bool) -> Path | None:
    """Check the run folder (main process, under its lock); return the checkpoint to resume from, if any."""
    run_dir = Path(recipe.training.output_dir)
    found = contents(run_dir)
    if found and not is_run_dir(run_dir):
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise CheckpointError(f"training.output_dir: {run_dir} holds files that are not a distill run ({shown}); "
                              "distill trains only into a new or empty folder or one of its own runs, and never "
                              "deletes anything else. Choose another output_dir")
    existing = checkpoint.list_checkpoints(run_dir / CHECKPOINTS)
    if resume and existing:
        _check_resumable(recipe, existing[-1])
        return existing[-1]
    finished = (run_dir / STUDENT).exists()
    if resume and finished:
        raise CheckpointError(f"--resume: {run_dir} holds a finished student but no checkpoint to resume from; pass "
                              "--overwrite to train it again from the start, or choose another output_dir")
    if (existing or finished) and not overwrite and not resume:
        raise CheckpointError(f"training.output_dir: {run_dir} already holds a run; pass --resume to continue it, "
                              "--overwrite to start over, or choose another output_dir")
    clear_run(run_dir)  # a run that never reached a checkpoint, or --overwrite: start from nothing
    (run_dir / MARKER).write_text(json.dumps({"distill": __version__,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    return None


def _check_resumable(recipe: Recipe, ckpt: Path) -> None:
    saved = validate_recipe(yaml.safe_load((ckpt / RECIPE).read_text()), source=str(ckpt / RECIPE))
    old, new = _comparable(saved), _comparable(recipe)
    diffs = [f"{section}.{key}" for section in new if isinstance(new[section], dict)
             for key in set(new[section]) | set(old.get(section) or {})
             if (old.get(section) or {}).get(key) != new[section].get(key)]
    diffs += [key for key in new if not isinstance(new[key], dict) and old.get(key) != new[key]]
    if diffs:
        raise CheckpointError(f"--resume: the recipe differs from the one {ckpt} was trained with in "
                              f"{', '.join(sorted(diffs))}; restore it or start a new output_dir")


def _comparable(recipe: Recipe) -> dict:
    """The recipe as --resume compares it: resolved defaults (a capture temperature left to follow the loss's equals
    the value it resolves to, as older runs wrote it), local paths absolute (a run writes them so; older runs wrote
    them as given), without the fields a resume may change — `output_dir` among them: a moved run is resumed in
    its new place — and `teacher.shard`, which changes where the teacher's weights are kept, not what it computes."""
    dump = with_absolute_paths(recipe.model_dump(mode="json"))
    for key in (*RESUMABLE_CHANGES, "output_dir"):
        dump["training"].pop(key)
    if dump.get("teacher"):
        dump["teacher"]["capture_temperature"] = recipe.capture_temperature
        dump["teacher"].pop("shard", None)  # where the teacher's weights live, not what it computes
    return dump
