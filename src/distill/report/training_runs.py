"""The report's training section: per run, a summary row, its curves (training objective, cross-entropy, and the
validation metrics logged every `training.eval_every` steps), the best checkpoint kept, and its recipe.

Everything comes from the run folders' files, read through `distill.results`: `metrics.jsonl` (validated rows, the
validation metrics among them) and `best/best.json`. A demo trains several runs from nearly the same recipe, so the
first recipe is shown whole and the others as a diff against it: what differs between the KD student's and the
baseline's recipes is the point, and it is lost in two 60-line listings.

`run_view` is the report of one training run on its own (`distill report RUN`), before or without any `distill
eval`: its curves, validation metrics and recipe; `run_facts` is None for a run that has logged no step yet, which
then has no training section, only `no_steps`' note.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DataError
from distill.report import figures
from distill.report.cells import Model, human_count, human_seconds, rate
from distill.results.layout import BEST, BEST_JSON, MARKER, METRICS, RECIPE
from distill.results.metrics import HIGHER_IS_BETTER, read_metrics, training_facts
from distill.results.schema import TrainingFacts

TIME_KEYS = ("wall_s", "elapsed_s", "time_s", "time", "timestamp")  # metrics.jsonl has none of these by default
VALIDATION = (("val_nll", "validation NLL", "nats/token"), ("val_agreement", "validation agreement with the teacher",
              "top-1 agreement"), ("val_kl", "validation KL(teacher ‖ student)", "nats/token"))


def is_training_run(folder: Path) -> bool:
    """A folder `distill train` wrote into (its marker), whether or not it has logged a step yet (`run_facts`)."""
    return (folder / MARKER).exists()


def run_facts(folder: Path) -> TrainingFacts | None:
    """The `TrainingFacts` of the run in `folder` from its metrics.jsonl and recipe.yaml; None when it has logged no
    step yet (no metrics.jsonl, or none but a line cut off mid-write)."""
    if not (folder / METRICS).is_file() or not read_metrics(folder):
        return None
    recipe = (folder / RECIPE).read_text(encoding="utf-8") if (folder / RECIPE).is_file() else None
    return TrainingFacts.model_validate(training_facts(folder, recipe, name=str(folder.resolve())))


def no_steps(folder: Path) -> str:
    """The report's note for a run that has logged no step yet."""
    return (f"The training run {folder.resolve().name} has logged no steps yet ({METRICS} holds none), so there is "
            "no training section.")


def training(raw: dict[str, TrainingFacts], models: list[Model], base: Path) -> dict[str, Any]:
    """Per training run: a summary row, its validation, its recipe (a diff for all but the first), and the curves
    from `<run_dir>/metrics.jsonl`."""
    by_name = {m.name: m for m in models}
    extra = [Model(n, n, "model", figures.OTHER_COLORS[i % len(figures.OTHER_COLORS)])
             for i, n in enumerate(n for n in raw if n not in by_name)]
    rows, recipes, notes, runs, validation = [], [], [], [], []
    for m in [m for m in models if m.name in raw] + extra:
        run = raw[m.name]
        steps: list[dict[str, Any]] = []
        if run.run_dir:
            folder = base / run.run_dir  # relative to the summary's folder, or absolute
            if (folder / METRICS).is_file():
                steps = read_metrics(folder)
                runs += [(m, steps)] if steps else []
                if row := _validation_row(m, steps, folder, _keep_best(run.recipe)):
                    validation.append(row)
            else:
                notes.append(f"{m.label}: no {METRICS} at {folder / METRICS}, so no curve.")
        last = steps[-1] if steps else {}
        speeds = sorted(v for r in steps if _finite(v := r.get("tokens_per_s")))
        rows.append({"model": m, "cells": [
            human_count(run.steps or last.get("step")),
            human_count(run.tokens or last.get("tokens_seen")),
            human_seconds(run.wall_s),
            *(f"{v:.3f}" if _finite(v := last.get(k)) else "—" for k in ("loss", "ce")),
            rate(speeds[len(speeds) // 2] if speeds else None)]})
        if run.recipe and run.recipe.strip():
            recipes.append(_recipe(m, run.recipe.rstrip(), recipes[0] if recipes else None))
    if not rows:
        return {}
    return {"rows": rows, "recipes": recipes, "notes": notes, "validation": validation,
            "figure": _curves(runs) if runs else None}


def _finite(value: Any) -> bool:
    """A number to show: metrics.jsonl rows are validated, but a logged term may be null (grad_norm) or NaN."""
    return value is not None and not isinstance(value, bool) and math.isfinite(value)


def _recipe(m: Model, yaml: str, first: dict[str, Any] | None) -> dict[str, Any]:
    """The first recipe whole; a later one as the lines that differ from the first (unified diff, one line of
    context), or a note that it is the same."""
    if first is None:
        return {"model": m, "yaml": yaml, "diff": None, "against": None}
    lines = list(difflib.unified_diff(first["yaml"].splitlines(), yaml.splitlines(), lineterm="", n=1))[2:]
    diff = [("add" if line.startswith("+") else "del" if line.startswith("-") else
             "hunk" if line.startswith("@@") else "", line) for line in lines]
    return {"model": m, "yaml": yaml, "diff": diff, "against": first["model"].label}


def _keep_best(recipe: str | None) -> str | None:
    """The recipe's `training.keep_best`, if it names one; a recipe that does not parse names none."""
    try:
        raw = yaml.safe_load(recipe) if recipe else None
    except yaml.YAMLError:
        return None
    training = raw.get("training") if isinstance(raw, dict) else None
    metric = training.get("keep_best") if isinstance(training, dict) else None
    return metric if isinstance(metric, str) else None


def _validation_row(m: Model, steps: list[dict[str, Any]], folder: Path, keep_best: str | None,
                    ) -> dict[str, Any] | None:
    """The run's validation in one row: how many evaluations, and per metric its first, best and last value; the
    kept best checkpoint from best/best.json; `keep_best`, the metric best/ is kept by (best.json's, else the
    recipe's `keep_best`), None when none was kept. A tie goes to the earliest step, as training's BestTracker keeps
    a new best only when it is strictly better."""
    evals = [r for r in steps if any(_finite(r.get(key)) for key, *_ in VALIDATION)]
    if not evals:
        return None
    cells = []
    for key, _title, _unit in VALIDATION:
        values = [(r["step"], r[key]) for r in evals if _finite(r.get(key))]
        if not values:
            continue
        pick = max if key in HIGHER_IS_BETTER else min  # both return the first of equal values: the earliest step
        best_step, best = pick(values, key=lambda sv: sv[1])
        cells.append({"metric": key, "first": f"{values[0][1]:.4f}", "best": f"{best:.4f}", "best_step": best_step,
                      "last": f"{values[-1][1]:.4f}"})
    kept = None
    if (best_file := folder / BEST / BEST_JSON).is_file():
        try:
            best_json = json.loads(best_file.read_text(encoding="utf-8"))
            kept = f"{BEST}/ holds step {best_json['step']} ({best_json['metric']} {best_json['value']:.4f})"
            keep_best = best_json["metric"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{best_file}: not a best.json written by distill train ({exc})") from exc
    return {"model": m, "evaluations": len(evals), "metrics": cells, "kept": kept, "keep_best": keep_best}


def _curves(runs: list[tuple[Model, list[dict[str, Any]]]]) -> dict[str, str | int]:
    """Loss and CE against step, the validation metrics against step, and loss against wall time if the lines
    carry a time, as one PNG data URI."""
    def series(key: str, x_key: str = "step") -> list[figures.Series]:
        out = []
        for m, steps in runs:
            pts = [(r[x_key], r[key]) for r in steps if _finite(r.get(x_key)) and _finite(r.get(key))]
            if pts and x_key != "step":
                pts = [(x - pts[0][0], y) for x, y in pts]  # absolute timestamps or elapsed: both start at 0
            if pts:
                out.append(figures.Series(m.label, m.color, [p[0] for p in pts], [p[1] for p in pts]))
        return out

    panels = [("training objective", "step", "loss", series("loss"))]
    if ce := series("ce"):
        panels.append(("cross-entropy on training batches", "step", "CE (nats/token)", ce))
    panels += [(title, "step", unit, found) for key, title, unit in VALIDATION if (found := series(key))]
    if by_time := next((s for key in TIME_KEYS if (s := series("loss", key))), None):
        panels.append(("training objective vs wall time", "seconds", "loss", by_time))
    return figures.embed(figures.line_panels(panels))


def run_view(folder: Path) -> dict[str, Any]:
    """The report of one training run on its own: every evaluation section empty, the training section filled (or,
    before the run has logged a step, a headline saying so)."""
    folder = Path(folder)
    name = folder.resolve().name
    facts = run_facts(folder)
    section: dict[str, Any] = {}
    headline = no_steps(folder)
    if facts is not None:
        model = Model(name, name, "student", figures.ROLE_COLORS["student"])
        section = training({name: facts}, [model], folder)
        headline = (f"{human_count(facts.steps)} steps on {human_count(facts.tokens)} tokens in "
                    f"{human_seconds(facts.wall_s)}; final loss {facts.final_loss:.3f}.")
        for row in section["validation"]:  # the metric best/ is kept by, else the first one logged
            best = next((c for c in row["metrics"] if c["metric"] == row["keep_best"]), row["metrics"][0])
            headline += f" Best {best['metric']} {best['best']} at step {best['best_step']} " \
                        f"({row['evaluations']} evaluations)."
    return {"kind": "distill.run", "run_dir": str(folder), "run_name": name, "models": [], "sets": [], "main": None,
            "roles": {}, "training": section, "tasks": [], "stages": [],
            "figures": {"quality": None, "reliability": None, "reliability_set": None, "left_out": []},
            "headline": headline, "provenance": [], "created": None, "audit": None, "game": None}
