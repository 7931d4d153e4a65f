"""The report's sections beyond the eval-set tables: training runs (their `metrics.jsonl` read through
`distill.results`), verifiable tasks, and the calibration data for the reliability figure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill.report import figures
from distill.report.cells import ACCURACY, Model, ci_cell, human_count, human_seconds, paired_table, rate, to_ci
from distill.results.layout import METRICS
from distill.results.metrics import read_metrics
from distill.results.schema import Calibration, TaskResult, TrainingFacts

ZERO_ACCURACY = 0.02  # at or below this a task score is called "about zero" in words, not left to the table
TIME_KEYS = ("wall_s", "elapsed_s", "time_s", "time", "timestamp")  # metrics.jsonl has none of these by default
N_EXAMPLES = 3


def training(raw: dict[str, TrainingFacts], models: list[Model], base: Path) -> dict[str, Any]:
    """Per training run: a summary row, its recipe, and its curves from `<run_dir>/metrics.jsonl`."""
    by_name = {m.name: m for m in models}
    extra = [Model(n, n, "model", figures.OTHER_COLORS[i % len(figures.OTHER_COLORS)])
             for i, n in enumerate(n for n in raw if n not in by_name)]
    rows, recipes, notes, runs = [], [], [], []
    for m in [m for m in models if m.name in raw] + extra:
        run = raw[m.name]
        steps: list[dict[str, Any]] = []
        if run.run_dir:
            path = base / run.run_dir / METRICS  # relative to the summary's folder, or absolute
            if path.is_file():
                steps = read_metrics(path.parent)
                runs += [(m, steps)] if steps else []
            else:
                notes.append(f"{m.label}: no {METRICS} at {path}, so no curve.")
        last = steps[-1] if steps else {}
        speeds = sorted(v for r in steps if _finite(v := r.get("tokens_per_s")))
        rows.append({"model": m, "cells": [
            human_count(run.steps or last.get("step")),
            human_count(run.tokens or last.get("tokens_seen")),
            human_seconds(run.wall_s),
            *(f"{v:.3f}" if _finite(v := last.get(k)) else "—" for k in ("loss", "ce")),
            rate(speeds[len(speeds) // 2] if speeds else None)]})
        if run.recipe and run.recipe.strip():
            recipes.append({"model": m, "yaml": run.recipe.rstrip()})
    if not rows:
        return {}
    return {"rows": rows, "recipes": recipes, "notes": notes, "figure": _curves(runs) if runs else None}


def _finite(value: Any) -> bool:
    """A number to show: metrics.jsonl rows are validated, but a logged term may be null (grad_norm) or NaN."""
    return value is not None and not isinstance(value, bool) and math.isfinite(value)


def _curves(runs: list[tuple[Model, list[dict[str, Any]]]]) -> str:
    """Loss and CE against step (and loss against wall time if the lines carry a time) as one PNG data URI."""
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
    if by_time := next((s for key in TIME_KEYS if (s := series("loss", key))), None):
        panels.append(("training objective vs wall time", "seconds", "loss", by_time))
    return figures.embed(figures.line_panels(panels))


def tasks(raw: dict[str, TaskResult], models: list[Model]) -> list[dict[str, Any]]:
    """Per task: accuracy with CIs, an honest note for a model that scores about zero, and a few generations."""
    out = []
    for name, task in raw.items():
        rows, notes, examples = [], [], []
        for m in [m for m in models if m.name in task.models]:
            scored = task.models[m.name]
            ci = to_ci(scored.accuracy)
            rows.append({"model": m, "cell": ci_cell(ci, ACCURACY)})
            if ci is not None and ci.mean <= ZERO_ACCURACY:
                notes.append(f"{m.label} scores about zero on {name} ({ci.mean:.0%}): it does not do this task at all, "
                             "so its row measures failure, not partial skill.")
            if items := scored.examples[:N_EXAMPLES]:
                examples.append({"model": m, "items": [
                    {**{k: _clip(getattr(e, k)) for k in ("question", "expected", "output", "extracted", "score")},
                     "passed": (e.score or 0) > 0} for e in items]})
        out.append({"name": name, "description": task.description or "", "n": task.n, "version": task.version,
                    "rows": rows, "notes": notes, "examples": examples,
                    "paired": paired_table(task.paired, models, [ACCURACY])})
    return out


def _clip(value: Any, limit: int = 400) -> str:
    text = "—" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " …"


def calibration(raw: dict[str, Calibration], models: list[Model]) -> list[figures.Calibration]:
    """Per model with calibration data: its ECE and bins (an empty bin: no tokens, so no accuracy)."""
    out = []
    for m in [m for m in models if m.name in raw]:
        cal = raw[m.name]
        bins = []
        for b in cal.bins:
            used = b.count is not None and b.confidence is not None and b.accuracy is not None
            bins.append((b.lo, b.hi, (b.count or 0) if used else 0, b.confidence or 0.0, b.accuracy or 0.0))
        if bins and cal.ece is not None:
            out.append(figures.Calibration(m.label, m.color, cal.ece, bins))
    return out
