"""Turn `distill eval` arguments into a `Suite`: model folders, `NAME=FOLDER`, or training run folders (whose
student is evaluated and whose recipe supplies the teacher and the training data for the contamination check)."""

from __future__ import annotations

from pathlib import Path

from distill.data.sources import read_records
from distill.errors import DataError
from distill.eval.runner import load_eval_set
from distill.eval.suite import ModelEntry, Suite


def parse_model(arg: str) -> tuple[ModelEntry, dict | None]:
    """`NAME=PATH` or `PATH`; a run folder (recipe.yaml + student/) yields its student and its recipe."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = "", arg
    folder = Path(path)
    recipe = None
    if (folder / "recipe.yaml").exists() and (folder / "student").is_dir():
        import yaml

        recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
        folder = folder / "student"
        name = name or Path(path).name
    elif (folder / "recipe.yaml").exists():
        raise DataError(f"{path} is a training run without a finished student/; finish it with distill train --resume")
    name = name or folder.name
    return ModelEntry(name, str(folder), "student" if recipe else "model"), recipe


def build_suite(models: list[str], *, data: str, reference: str | None, baseline: str | None, text_field: str,
                slice_by: list[str], max_docs: int | None, train_data: str | None, tasks: list[str], task_n: int,
                max_length: int, seed: int) -> Suite:
    entries, recipes = [], []
    for arg in models:
        entry, recipe = parse_model(arg)
        entries.append(entry)
        if recipe:
            recipes.append(recipe)
    if reference is None and recipes and (recipes[0].get("teacher") or {}).get("model"):
        reference = f"teacher={recipes[0]['teacher']['model']}"
    ref_name = None
    if reference is not None:
        ref_entry, _ = parse_model(reference if "=" in reference else f"teacher={reference}")
        ref_entry.role = "teacher"
        entries.insert(0, ref_entry)
        ref_name = ref_entry.name
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise DataError(f"two models share a name in {names}; name them with NAME=FOLDER")
    if baseline is not None:
        if baseline not in names:
            raise DataError(f"--baseline {baseline!r} is not one of the models {names}")
        next(e for e in entries if e.name == baseline).role = "baseline"
    pairs = [(e.name, baseline) for e in entries if baseline and e.name not in (baseline, ref_name)]
    if train_data is None and recipes:
        train_data = recipes[0]["data"]["train"]
    train_texts = None
    if train_data is not None:
        field = (recipes[0]["data"].get("text_field") if recipes else None) or "text"
        records = read_records(train_data, field="--train-data")
        train_texts = [r[field] for r in records if isinstance(r.get(field), str)]
    eval_set = load_eval_set(data, name=Path(data).stem or "eval", description=f"held-out data {data}",
                             text_field=text_field, slice_fields=slice_by, max_docs=max_docs, seed=seed)
    return Suite(models=entries, sets=[eval_set], reference=ref_name, baseline=baseline, pairs=pairs,
                 tasks=[(t, task_n) for t in tasks], train_texts=train_texts, max_length=max_length, seed=seed)
