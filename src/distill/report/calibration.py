"""The calibration data for the report's reliability figure, from each model's ECE bins."""

from __future__ import annotations

from distill.report import figures
from distill.report.cells import Model
from distill.results.schema import Calibration


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
