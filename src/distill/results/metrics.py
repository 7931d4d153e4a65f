"""`metrics.jsonl`: one JSON line per logged optimizer step of a training run, written by `training/metrics.py`
(`metrics_line`) and read by the training tests, the demo and the report (`read_metrics`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from distill.errors import DataError
from distill.results.io import first_problem
from distill.results.layout import METRICS

HIGHER_IS_BETTER = {"val_agreement"}  # validation metrics where higher is better; the rest are better lower


class MetricsRow(BaseModel):
    """One logged step (schema version: `SCHEMA_VERSION`, the result files'). Besides the fields named here, each
    term the objective reports (such as `ce` and `kd`) and each statistic of the teacher's signal (such as
    `teacher_mass`, the share of the teacher's probability a top-k cache holds) is a number under its own name."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float]  # further loss terms and statistics, as the objective names them

    step: int  # optimizer steps completed
    loss: float  # the objective, per target token of the step's global batch
    ce: float | None = None  # cross-entropy with the data, per target token
    kd: float | None = None  # the divergence from the teacher, per target token
    lr: float
    grad_norm: float | None  # before clipping; null when not finite (a step the fp16 loss scaler skipped)
    tokens_per_s: float  # input tokens per second since the previous logged step
    tokens_seen: int  # input tokens trained on so far
    targets: int  # target tokens in the step's global batch
    teacher_mass: float | None = None
    teacher_distinct: float | None = None  # a sampled cache: distinct teacher tokens per position
    loss_scale: float | None = None  # fp16 only
    skipped: bool | None = None  # fp16 only: the loss scaler skipped the step

    def to_json(self) -> dict[str, Any]:
        """The fields this row holds, as JSON."""
        return self.model_dump(mode="json", exclude_unset=True)


def metrics_line(row: dict[str, Any]) -> str:
    """A row as its line of metrics.jsonl (without the newline), validated; its fields keep their order."""
    try:
        dumped = MetricsRow.model_validate(row).to_json()
    except ValidationError as exc:  # a bug in the training loop, not the user's
        raise ValueError(f"a metrics row that does not fit distill.results.MetricsRow: {first_problem(exc)}") from exc
    return json.dumps({key: dumped[key] for key in row})


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged steps of the training run in `run_dir`, each validated as a `MetricsRow`, as dicts with the
    fields of its line. A line that is not JSON — the last line of a run killed mid-write — is skipped; a line that
    is JSON but not a row is a DataError naming the line and the field."""
    path = Path(run_dir) / METRICS
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc}); train the run first") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            row = MetricsRow.model_validate(raw).to_json()
        except ValidationError as exc:
            raise DataError(f"{path}, line {number}: {first_problem(exc)}; this is not a metrics log written by "
                            "`distill train`") from exc
        rows.append({key: row[key] for key in raw})
    return rows


def training_facts(run_dir: Path, recipe_yaml: str | None = None, name: str | None = None) -> dict[str, Any]:
    """A finished run's `TrainingFacts` (results/schema.py) from its metrics.jsonl: steps, tokens and training wall
    time — summed over the logged steps, so the figure stays right for a run that was killed and resumed — and
    the final loss. `name`: how the run folder is named in the result (default: its folder name)."""
    rows = read_metrics(run_dir)
    if not rows:
        raise DataError(f"{Path(run_dir) / METRICS} is empty; train the run first")
    seen = [0] + [r["tokens_seen"] for r in rows]
    wall = sum((seen[i + 1] - seen[i]) / r["tokens_per_s"] for i, r in enumerate(rows) if r["tokens_per_s"] > 0)
    return {"run_dir": name or Path(run_dir).name, "steps": rows[-1]["step"], "tokens": rows[-1]["tokens_seen"],
            "wall_s": round(wall, 1), "final_loss": rows[-1]["loss"], "recipe": recipe_yaml}
