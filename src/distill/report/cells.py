"""How the report shows a number: metrics and their precision, table cells with intervals, paired differences put
into words, counts, bytes and durations — the same everywhere, in report.html and report.md alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from distill.results.schema import Interval, ModelInfo, Paired


class CI(NamedTuple):
    mean: float
    low: float  # NaN: a value without an interval (one document)
    high: float


def to_ci(interval: Interval | None) -> CI | None:
    if interval is None or not math.isfinite(interval.mean):  # nothing to show: "—"
        return None
    if interval.ci_low is None or interval.ci_high is None:  # one document: a value, no interval
        return CI(interval.mean, math.nan, math.nan)
    return CI(interval.mean, interval.ci_low, interval.ci_high)


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # table header
    name: str  # in prose
    unit: str  # of a difference, in prose
    scale: float = 1.0  # 100 shows a fraction as a percentage
    decimals: int = 2
    lower_is_better: bool = True


METRICS = [Metric("nll", "NLL", "NLL", "nats/token"), Metric("ppl", "perplexity", "perplexity", "", decimals=1),
           Metric("top1_acc", "top-1 acc. %", "top-1 accuracy", "points", 100, 1, False),
           Metric("ece", "ECE %", "calibration error", "points", 100, 1),
           Metric("agreement", "agreement %", "agreement", "points", 100, 1, False),
           Metric("kl_forward", "KL(ref‖model)", "forward KL", "nats/token", decimals=3),
           Metric("kl_reverse", "KL(model‖ref)", "reverse KL", "nats/token", decimals=3)]
NLL = METRICS[0]
ACCURACY = Metric("accuracy", "accuracy %", "accuracy", "points", 100, 1, False)
GAP = Metric("gap_recovered", "gap recovered %", "gap recovered", "points", 100, 0, False)


@dataclass
class Cell:
    """A table cell: `mean` and `ci` are shown side by side (`5.71 [5.62, 5.80]`); `cls` marks significance."""

    mean: str
    ci: str = ""
    cls: str = ""

    @property
    def text(self) -> str:
        return f"{self.mean} {self.ci}".strip()


@dataclass
class Model:
    """A model as the report shows it; `info` holds its facts formatted for the models table."""

    name: str
    label: str
    role: str
    color: str = ""
    entry: ModelInfo = field(default_factory=ModelInfo)
    info: dict[str, Any] = field(default_factory=dict)


def _decimals(metric: Metric, ci: CI) -> int:
    """The metric's usual precision, raised until the interval's half-width shows (±0.004 → 3 decimals)."""
    if abs(ci.mean * metric.scale) >= 1000:
        return 0
    half = (ci.high - ci.low) * metric.scale / 2
    return max(metric.decimals, min(4, math.ceil(-math.log10(half)))) if half > 0 else metric.decimals


def ci_cell(ci: CI | None, metric: Metric, *, signed: bool = False) -> Cell:
    if ci is None:
        return Cell("—")
    d, s = _decimals(metric, ci), metric.scale
    if math.isnan(ci.low):
        return Cell(f"{ci.mean * s:{'+' if signed else ''}.{d}f}", "(no interval: 1 document)")
    return Cell(f"{ci.mean * s:{'+' if signed else ''}.{d}f}", f"[{ci.low * s:.{d}f}, {ci.high * s:.{d}f}]")


def compare(a: str, b: str, ci: CI, metric: Metric) -> tuple[str, str]:
    """(sentence, verdict) for a paired difference a − b: who beat whom and by how much, or that the 95% interval
    cannot tell them apart. The verdict is from a's side: "better", "worse", or "" when the interval includes 0."""
    d, s = _decimals(metric, ci), metric.scale
    if ci.low <= 0 <= ci.high:
        return (f"no detectable difference between {a} and {b} on {metric.name} ({ci.mean * s:+.{d}f} {metric.unit}, "
                f"95% CI [{ci.low * s:.{d}f}, {ci.high * s:.{d}f}])", "")
    a_better = (ci.mean < 0) == metric.lower_is_better
    winner, loser = (a, b) if a_better else (b, a)
    low, high = sorted((abs(ci.low) * s, abs(ci.high) * s))
    return (f"{winner} beat {loser} on {metric.name} by {abs(ci.mean) * s:.{d}f} {metric.unit}, "
            f"95% CI [{low:.{d}f}, {high:.{d}f}]", "better" if a_better else "worse")


def human_count(n: float | None) -> str:
    if n is None:
        return "—"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for div, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%" if fraction < 0.01 else f"{100 * fraction:.1f}%"


# ---- paired differences ----------------------------------------------------------------------------------------


def pair(key: str, models: list[Model]) -> tuple[Model, Model] | None:
    """Split "<a>_minus_<b>" against the known names (names may themselves contain underscores)."""
    return next(((a, b) for a in models for b in models if key == f"{a.name}_minus_{b.name}"), None)


def pair_title(key: str, models: list[Model]) -> str:
    return f"{p[0].label} − {p[1].label}" if (p := pair(key, models)) else key


def paired_ci(paired: Paired, key: str, metric: str) -> CI | None:
    return to_ci(paired.get(key, {}).get(metric))


def diff_cell(ci: CI | None, models: tuple[Model, Model] | None, metric: Metric) -> Cell:
    cell = ci_cell(ci, metric, signed=True)
    if ci is not None and models and (verdict := compare(models[0].label, models[1].label, ci, metric)[1]):
        cell.cls = f"sig-{verdict}"
    return cell


def paired_table(raw: Paired, models: list[Model], metrics: list[Metric]) -> dict[str, Any]:
    """Table of paired differences (columns: the metrics present) and, for the first metric, the verdicts in words."""
    columns = [m for m in metrics if any(m.key in v for v in raw.values())]
    rows, sentences = [], []
    for key in raw:
        both = pair(key, models)
        cis = [paired_ci(raw, key, m.key) for m in columns]
        rows.append({"label": pair_title(key, models),
                     "cells": [diff_cell(c, both, m) for c, m in zip(cis, columns, strict=True)]})
        if both and columns and columns[0] is metrics[0] and cis[0] is not None:
            text, verdict = compare(both[0].label, both[1].label, cis[0], metrics[0])
            sentences.append({"text": text[0].upper() + text[1:] + ".", "cls": verdict})
    return {"columns": [m.title for m in columns], "rows": rows, "sentences": sentences}
