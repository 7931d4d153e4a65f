"""Turn `distill eval` arguments into a `Suite`: model folders, `NAME=FOLDER`, or training run folders (whose
student is evaluated and whose recipe supplies the teacher and the training data for the contamination check)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from distill.errors import DataError
from distill.eval.eval_set import load_eval_set
from distill.eval.suite import ModelEntry, Suite
from distill.eval.training_text import TrainingTexts, read_training_texts, recipe_training_texts
from distill.recipe import DataConfig
from distill.results.layout import RECIPE, STUDENT


def parse_model(arg: str) -> tuple[ModelEntry, dict | None]:
    """`NAME=PATH` or `PATH`; a training run folder (its recipe.yaml and student/) yields its student and its
    recipe."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = "", arg
    folder = Path(path)
    recipe = None
    if (folder / RECIPE).exists() and (folder / STUDENT).is_dir():
        import yaml

        recipe = yaml.safe_load((folder / RECIPE).read_text())
        folder = folder / STUDENT
        name = name or Path(path).name
    elif (folder / RECIPE).exists():
        raise DataError(f"{path} is a training run without a finished {STUDENT}/; finish it with distill train "
                        "--resume")
    name = name or folder.name
    return ModelEntry(name, str(folder), "student" if recipe else "model"), recipe


def check_output_path(out: Path, option: str = "--out") -> None:
    """Fail now, in one line, if the result cannot be written to `out` — not after the (slow) evaluation.

    The folder is created (writing would create it anyway) and a temporary file is written into it and removed:
    that is the only test that answers for read-only mounts, permissions and quotas alike."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{option} {out} is a folder; give a file path, e.g. {out / 'eval.json'}")
    parent = out.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise DataError(f"{option} {out}: {blocker} is a file, not a folder; choose another path for the result")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise DataError(f"{option} {out}: cannot write into {parent} ({exc.strerror or exc}); choose a writable "
                        "path for the result") from exc


def build_suite(models: list[str], *, data: str, reference: str | None, baseline: str | None, text_field: str,
                slice_by: list[str], max_docs: int | None, train_data: str | None, tasks: list[str], task_n: int,
                max_length: int, seed: int, fmt: str = "auto", chat_template: str | None = None) -> Suite:
    if max_docs is not None and max_docs < 1:
        raise DataError(f"--max-docs {max_docs}: evaluate at least 1 document, or leave --max-docs out to evaluate "
                        "them all")
    if tasks and task_n < 1:
        raise DataError(f"--task-n {task_n}: each task needs at least 1 item")
    if max_length < 2:
        raise DataError(f"--max-length {max_length}: a document needs at least 2 tokens to predict one")
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
    train_texts = _training_texts(train_data, recipes[0] if recipes else None)
    eval_set = load_eval_set(data, name=Path(data).stem or "eval", description=f"held-out data {data}",
                             text_field=text_field, slice_fields=slice_by, max_docs=max_docs, seed=seed, fmt=fmt)
    return Suite(models=entries, sets=[eval_set], reference=ref_name, baseline=baseline, pairs=pairs,
                 tasks=[(t, task_n) for t in tasks], train_texts=train_texts, max_length=max_length, seed=seed,
                 chat_template=chat_template)


def _training_texts(train_data: str | None, recipe: dict | None) -> TrainingTexts | None:
    """The training text for the contamination check: `--train-data`, else the run's training data read as its
    recipe reads it (source or mixture, columns, format, text field, and only the first `max_examples` records, the
    ones it trained on). The recipe's text field applies to `--train-data` too; its format does not (that file may
    be another one)."""
    data = (recipe or {}).get("data") or {}
    text_field = data.get("text_field") or "text"
    encoding = data.get("encoding") or "utf-8"
    if train_data is not None:
        return read_training_texts(train_data, text_field=text_field, field="--train-data", encoding=encoding)
    if not data.get("train") and not data.get("mixture"):
        return None
    return recipe_training_texts(DataConfig.model_validate(data), field="the run's data.train")
