"""Run folders that can move: the recipe a run writes holds absolute paths, and a recipe read from inside a run
folder trains into that folder.

The rule (docs/recipe.md, "Run folders"):
- A recipe's relative paths are relative to the working directory it is used from. When a run starts, every local
  path of its recipe that exists (data files, model and cache folders, a chat-template file) is written to the
  run's `recipe.yaml` made absolute, so `--resume` and `distill eval`'s contamination check work from any
  directory.
- `training.output_dir` is the exception: a recipe read from a run folder (a `recipe.yaml` beside the
  `.distill-run` marker) trains into that folder, wherever it now is. `distill train MOVED/recipe.yaml --resume`
  continues a moved run, and `--resume` compares recipes without `output_dir`.
Hub ids and `builtin:` names are left alone: they name no local file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.recipe.base import BUILTIN_PREFIX, is_glob
from distill.results.layout import MARKER

# (section, field) pairs that may hold a local path; `data.mixture` holds a list of sources with a `path` each
PATH_FIELDS = (("data", "train"), ("data", "chat_template"), ("teacher", "model"), ("teacher", "cache"),
               ("student", "model"), (None, "tokenizer"), ("generate", "prompts"))


def _path_slots(raw: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    for section, key in PATH_FIELDS:
        node = raw if section is None else raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            yield node, key
    for source in (raw.get("data") or {}).get("mixture") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            yield source, "path"


def with_absolute_paths(raw: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """`raw` (a recipe as a mapping, changed in place and returned) with each local path that exists under `base`
    (default: the working directory), or glob that matches files there, made absolute. Templates, hub ids,
    builtins and missing paths stay as given."""
    base = Path.cwd() if base is None else base
    for node, key in _path_slots(raw):
        value = node[key]
        if value.startswith(BUILTIN_PREFIX) or "{{" in value or "{%" in value or Path(value).is_absolute():
            continue
        candidate = base / value
        if candidate.exists() or (is_glob(value) and any(base.glob(value))):
            node[key] = str(candidate.resolve()) if candidate.exists() else str(base.resolve() / value)
    return raw


def run_folder_of(recipe_file: Path) -> Path | None:
    """The run folder a recipe file sits in (beside the run marker), or None."""
    folder = recipe_file.resolve().parent
    return folder if (folder / MARKER).is_file() else None
