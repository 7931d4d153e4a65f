"""Progress on long work that reads well both in a terminal and in a log file.

In a terminal, rich draws a live bar. Where output is not a terminal (nohup, SLURM, CI, a pipe) rich draws nothing
until the work ends, so a batch job's log shows no sign of life for hours. There `LineProgress` prints plain lines
instead: the first update, then at most one every `DISTILL_PROGRESS_SECONDS` (default 30), and the last one, e.g.

    train 120/1000 (12%) loss 2.3456 · 1,234 tok/s · elapsed 0:01:02 · ETA 0:07:35

`progress(...)` picks one for the console; both take the calls the long jobs make (`add_task`, `update`,
`advance`, used as a context manager), so a job writes its progress once.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

INTERVAL_ENV = "DISTILL_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def progress(label: str, *fields: str, disable: bool = False, unit: str = "", file: TextIO | None = None,
             ) -> Progress | LineProgress:
    """A bar or periodic lines for work labelled `label` (a task's description, when it has one). `fields`:
    templates shown after the count, each naming one task field, e.g. "loss {loss}" or "{tps} tok/s" (rewritten
    as rich's `{task.fields[...]}` for the bar).
    `unit`: appended to the counts ("tokens")."""
    stream = file if file is not None else sys.stdout
    if disable:
        return Progress(disable=True)
    if Console(file=stream).is_terminal:
        count = (TextColumn("{task.completed:,}/{task.total:,} " + unit) if unit else MofNCompleteColumn())
        bar_fields = tuple(TextColumn(f.replace("{", "{task.fields[").replace("}", "]}")) for f in fields)
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), count, *bar_fields, TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=Console(file=stream))
    return LineProgress(label, fields, unit=unit, file=stream)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float
    start_completed: float
    printed: float | None = None  # when the last line was printed
    printed_at: float | None = None  # the count it showed


@dataclass
class LineProgress:
    """Plain progress lines for output that is not a terminal (see the module docstring)."""

    label: str
    fields: tuple[str, ...] = ()
    unit: str = ""
    file: TextIO = field(default_factory=lambda: sys.stdout)
    interval: float | None = None
    _tasks: list[_Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.interval is None:
            self.interval = interval_from_env()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:  # the state the work stopped at, unless its line is out already
            for task in self._tasks:
                if task.printed is not None and task.printed_at != task.completed:
                    self._print(task)

    def add_task(self, description: str = "", total: float | None = None, completed: float = 0, **fields: Any) -> int:
        now = time.monotonic()
        self._tasks.append(_Task(description, total, completed, dict(fields), now, completed))
        return len(self._tasks) - 1

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        task.fields.update(fields)
        now = time.monotonic()
        done = bool(task.total) and task.completed >= task.total
        if task.printed is None or done or now - task.printed >= self.interval:
            self._print(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def line(self, task_id: int = 0) -> str:
        """The line `task_id` would print now."""
        task = self._tasks[task_id]
        unit = f" {self.unit}" if self.unit else ""
        if task.total:
            count = f"{task.completed:,.0f}/{task.total:,.0f}{unit} ({task.completed / task.total:.0%})"
        else:
            count = f"{task.completed:,.0f}{unit}"
        parts = [f"{task.description or self.label} {count}"]
        shown = [f.format(**task.fields) for f in self.fields if _has_fields(f, task.fields)]
        parts += shown
        elapsed = time.monotonic() - task.started
        parts.append(f"elapsed {_clock(elapsed)}")
        rate = (task.completed - task.start_completed) / elapsed if elapsed > 0 else 0.0
        if task.total and task.completed < task.total and rate > 0:
            parts.append(f"ETA {_clock((task.total - task.completed) / rate)}")
        return parts[0] + " " + " · ".join(parts[1:])

    def _print(self, task: _Task) -> None:
        index = self._tasks.index(task)
        print(self.line(index), file=self.file, flush=True)
        task.printed, task.printed_at = time.monotonic(), task.completed


def interval_from_env() -> float:
    """Seconds between lines: `DISTILL_PROGRESS_SECONDS`, else 30; a value that is not a number ≥ 0 is named in a
    warning and the default used (a typo must not stop a training job)."""
    raw = os.environ.get(INTERVAL_ENV)
    try:
        value = float(raw) if raw is not None else DEFAULT_INTERVAL
    except ValueError:
        value = -1.0
    if value < 0:
        print(f"warning: {INTERVAL_ENV}={raw!r} is not a number of seconds; printing progress every "
              f"{DEFAULT_INTERVAL:g} s", file=sys.stderr)
        return DEFAULT_INTERVAL
    return value


def _has_fields(template: str, values: dict[str, Any]) -> bool:
    try:
        template.format(**values)
    except (KeyError, IndexError, ValueError):
        return False
    return True


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))
