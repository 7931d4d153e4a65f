"""Metrics of a run: one JSON line per logged step in `metrics.jsonl`, mirrored as TensorBoard scalars.

Each line is a `distill.results.MetricsRow`, validated before it is written; `read_metrics` (from `distill.results`)
reads them back. On resume the file is cut back to the resumed step first, so it always describes one uninterrupted
trajectory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distill.results.layout import METRICS, METRICS_TMP, TENSORBOARD
from distill.results.metrics import metrics_line, read_metrics

__all__ = ["MetricsLog", "read_metrics"]


class MetricsLog:
    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool = True):
        self.path = run_dir / METRICS
        self._truncate(start_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 — held open for the run
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD), purge_step=start_step + 1)

    def _truncate(self, start_step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= start_step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a line cut by a kill: everything after it is gone too
        tmp = self.path.with_name(METRICS_TMP)
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, step: int, values: dict[str, Any]) -> None:
        self._file.write(metrics_line({"step": step, **values}) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
