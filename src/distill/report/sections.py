"""The report's sections beyond the eval-set tables: verifiable tasks, and the calibration data for the reliability
figure. Training runs are in training_runs.py."""

from __future__ import annotations

import json
from typing import Any

from distill.report import figures
from distill.report.cells import ACCURACY, Model, ci_cell, paired_table, to_ci
from distill.results.schema import Calibration, TaskResult

ZERO_ACCURACY = 0.02  # at or below this a task score is called "about zero" in words, not left to the table
N_EXAMPLES = 3


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
