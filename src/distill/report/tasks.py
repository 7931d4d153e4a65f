"""The report's task section: accuracy per model with CIs, how many answers ran into the generation budget, honest
notes, and the first few generations.

A generation cut off at the task's `max_new_tokens` is scored as it stood, so its final answer may never have been
written: a model that reasons at length can score low because of the budget, not its skill. The report says how
often that happened and marks the cut-off examples, instead of leaving the reader to guess from a ragged output.
"""

from __future__ import annotations

import json
from typing import Any

from distill.report.cells import ACCURACY, Cell, Model, ci_cell, paired_table, percent, to_ci
from distill.results.schema import TaskResult

ZERO_ACCURACY = 0.02  # at or below this a task score is called "about zero" in words, not left to the table
TRUNCATED_NOTE = 0.1  # at or above this share of answers cut off by the budget, a model's row gets a note in words
N_EXAMPLES = 3


def tasks(raw: dict[str, TaskResult], models: list[Model]) -> list[dict[str, Any]]:
    """Per task: accuracy with CIs, the share of answers cut off by the token budget (when the result records it),
    notes for a model that scores about zero or is often cut off, and a few generations, the cut-off ones marked."""
    out = []
    for name, task in raw.items():
        shown = [m for m in models if m.name in task.models]
        budget = f"the {task.max_new_tokens}-token budget" if task.max_new_tokens else "the token budget"
        cut_known = any(task.models[m.name].truncated is not None for m in shown)
        rows, notes, examples = [], [], []
        for m in shown:
            scored = task.models[m.name]
            ci = to_ci(scored.accuracy)
            cells = [ci_cell(ci, ACCURACY)]
            if cut_known:
                cells.append(Cell("—" if scored.truncated is None else _share(scored.truncated)))
            rows.append({"model": m, "cells": cells})
            if ci is not None and ci.mean <= ZERO_ACCURACY:
                notes.append(f"{m.label} scores about zero on {name} ({ci.mean:.0%}): it does not do this task at all, "
                             "so its row measures failure, not partial skill.")
            if scored.truncated is not None and scored.truncated >= TRUNCATED_NOTE:
                notes.append(f"{_share(scored.truncated)} of {m.label}'s answers hit {budget} and were scored "
                             "unfinished, so its accuracy may understate what it does with room to finish.")
            if items := scored.examples[:N_EXAMPLES]:
                examples.append({"model": m, "items": [
                    {**{k: _clip(getattr(e, k)) for k in ("question", "expected", "output", "extracted", "score")},
                     "passed": (e.score or 0) > 0, "truncated": bool(e.truncated)} for e in items]})
        columns = ["accuracy %", *([f"answers that hit {budget}"] if cut_known else [])]
        out.append({"name": name, "description": task.description or "", "n": task.n, "version": task.version,
                    "budget": budget, "columns": columns, "rows": rows, "notes": notes, "examples": examples,
                    "paired": paired_table(task.paired, models, [ACCURACY])})
    return out


def _share(fraction: float) -> str:
    return "0%" if fraction == 0 else percent(fraction)


def _clip(value: Any, limit: int = 400) -> str:
    text = "—" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " …"
