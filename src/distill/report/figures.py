"""The report's plots, drawn with matplotlib and returned as PNG bytes (embedded in the HTML as data URIs).

Figures are built with `matplotlib.figure.Figure` directly, never `pyplot`: no global figure registry, no GUI
backend chosen behind our back, nothing to close — each figure is rendered by the Agg canvas and dropped. Inputs
are plain numbers and labels, not summary.json fragments, so the plotting knows nothing of the file format.
PNG metadata is stripped so the same data gives the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 144
# Fixed colours by role, so a model has the same colour in every figure and in the tables' swatches.
ROLE_COLORS = {"teacher": "#2b3a55", "student": "#2a6fdb", "baseline": "#e07a1f", "init": "#9aa0a6"}
OTHER_COLORS = ("#2a9d8f", "#b5418b", "#7b5ea7", "#c0392b", "#6a8d2f", "#8c564b", "#17becf", "#bcbd22")
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#8a939e", "axes.grid": True,
    "grid.color": "#e6e9ed", "grid.linewidth": 0.8, "xtick.color": "#4a5360", "ytick.color": "#4a5360",
    "legend.frameon": False, "legend.fontsize": 9, "font.family": "DejaVu Sans",
}


@dataclass(frozen=True)
class Series:
    """One line: a model's values along a shared x axis (None/NaN points are skipped)."""

    label: str
    color: str
    x: Sequence[float]
    y: Sequence[float | None]


@dataclass(frozen=True)
class Point:
    """One model in the quality-vs-cost plot: NLL with its interval, and what it costs."""

    label: str
    color: str
    nll: tuple[float, float, float]  # mean, ci_low, ci_high
    params: float | None
    tokens_per_s: float | None


@dataclass(frozen=True)
class Calibration:
    label: str
    color: str
    ece: float
    bins: Sequence[tuple[float, float, int, float, float]]  # lo, hi, count, confidence, accuracy


def model_colors(roles: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Colour per model name from (name, role) pairs in display order; a role's colour goes to its first model."""
    colors: dict[str, str] = {}
    used: set[str] = set()
    others = iter(OTHER_COLORS * (1 + len(roles) // len(OTHER_COLORS)))
    for name, role in roles:
        color = ROLE_COLORS.get(role)
        colors[name] = color if color is not None and color not in used else next(others)
        used.add(colors[name])
    return colors


def embed(png: bytes) -> dict[str, str | int]:
    """An <img> source and its CSS size: drawn at DPI, shown at 96 px per inch, so a figure drawn N inches wide
    shows N inches wide (all figures at one scale) and stays sharp on high-density screens."""
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk, right after the 8-byte signature
    return {"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            "width": round(width * 96 / DPI), "height": round(height * 96 / DPI)}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _positive(x: float | None) -> bool:  # plottable on a log axis
    return _finite(x) and x > 0


def line_panels(panels: Sequence[tuple[str, str, str, Sequence[Series]]]) -> bytes:
    """Side-by-side line plots, one per (title, x label, y label, series); used for the training curves."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.3 * len(panels), 3.1), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, xlabel, ylabel, series) in zip(axes, panels, strict=True):
            for s in series:
                pts = [(x, y) for x, y in zip(s.x, s.y, strict=True) if _finite(x) and _finite(y)]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=s.color, label=s.label, linewidth=1.6)
            ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
            if series:
                ax.legend()
        return _png(fig)


def quality_vs_cost(points: Sequence[Point], set_label: str) -> bytes:
    """Held-out NLL (with CI error bars) against parameter count and against scoring speed, one labelled point per
    model; a panel is left out when no model has its x value."""
    axes_spec = [(lambda p: p.params, "parameters (log scale)", "NLL vs size"),
                 (lambda p: p.tokens_per_s, "scoring tokens/s (log scale)", "NLL vs speed")]
    axes_spec = [a for a in axes_spec if any(_positive(a[0](p)) for p in points)]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.4 * max(1, len(axes_spec)), 3.3), layout="constrained")
        axes = fig.subplots(1, max(1, len(axes_spec)), squeeze=False)[0]
        for ax, (get_x, xlabel, title) in zip(axes, axes_spec, strict=False):
            shown = [(get_x(p), p) for p in points if _positive(get_x(p))]
            for x, p in shown:
                mean, lo, hi = p.nll
                ax.errorbar([x], [mean], yerr=[[max(0, mean - lo)], [max(0, hi - mean)]], fmt="o", color=p.color,
                            markersize=6, capsize=3, elinewidth=1.2)
            ax.set_xscale("log")
            ax.margins(x=0.3, y=0.2)
            ax.set(title=f"{title} — {set_label}", xlabel=xlabel, ylabel="NLL (nats/token), lower is better")
            offsets = _label_offsets(ax, [(x, p.nll[0]) for x, p in shown])
            for (x, p), dy in zip(shown, offsets, strict=True):
                ax.annotate(p.label, (x, p.nll[0]), xytext=(7, dy), textcoords="offset points", fontsize=9,
                            color=p.color, va="center")
        return _png(fig)


def _label_offsets(ax: Axes, xy: Sequence[tuple[float, float]], gap: float = 11.0) -> list[float]:
    """Vertical label offsets (points) that keep the labels of nearby points from overlapping: labels are placed
    bottom-up and each is pushed above any already-placed label closer than `gap` whose point is horizontally near.
    Positions are taken before constrained layout runs, which only shrinks the axes a little."""
    if not xy:
        return []
    ax.autoscale_view()
    scale = 72 / ax.figure.dpi
    pts = [(px * scale, py * scale) for px, py in ax.transData.transform(xy)]
    placed: list[tuple[float, float]] = []  # (x, label y) in points
    label_y = [0.0] * len(pts)
    for i in sorted(range(len(pts)), key=lambda k: pts[k][1]):
        x, y = pts[i]
        for px, py in sorted(placed, key=lambda p: p[1]):
            if abs(px - x) < 100 and abs(py - y) < gap:
                y = py + gap
        label_y[i] = y
        placed.append((x, y))
    return [label_y[i] - pts[i][1] for i in range(len(pts))]


def reliability(models: Sequence[Calibration]) -> bytes:
    """Reliability diagram per model: accuracy against mean confidence per bin (on the diagonal = calibrated), with
    the share of tokens per bin beneath, because a bin far off the diagonal matters only if tokens land in it."""
    ncols = min(len(models), 4)
    nrows = math.ceil(len(models) / ncols)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(2.5 * ncols, 3.6 * nrows), layout="constrained")
        grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1] * nrows)
        for i, m in enumerate(models):
            r, c = divmod(i, ncols)
            top = fig.add_subplot(grid[2 * r, c])
            bottom = fig.add_subplot(grid[2 * r + 1, c], sharex=top)
            used = [b for b in m.bins if b[2] > 0]
            top.plot([0, 1], [0, 1], linestyle="--", color="#9aa0a6", linewidth=1)
            if used:
                top.plot([b[3] for b in used], [b[4] for b in used], "o-", color=m.color, markersize=3.5,
                         linewidth=1.4, label=f"ECE {100 * m.ece:.1f}%")
            top.set(xlim=(0, 1), ylim=(0, 1), title=m.label, ylabel="accuracy" if c == 0 else None)
            top.tick_params(labelbottom=False)
            if used:
                top.legend(loc="upper left")
            total = sum(b[2] for b in m.bins) or 1
            bottom.bar([b[0] for b in m.bins], [b[2] / total for b in m.bins], width=[b[1] - b[0] for b in m.bins],
                       align="edge", color=m.color, alpha=0.55, edgecolor="white", linewidth=0.5)
            bottom.set(xlabel="confidence", ylabel="share" if c == 0 else None, xticks=[0, 0.5, 1])
            bottom.grid(axis="x", visible=False)
        return _png(fig)


def slice_dots(field: str, values: Sequence[str], series: Sequence[tuple[str, str, Sequence[tuple[float, float, float]
               | None]]], flattest: int | None) -> bytes:
    """NLL per slice value, one dodged dot with CI per model (series: label, colour, (mean, lo, hi) per value);
    the value where the student falls flattest behind the teacher is shaded."""
    n = max(len(series), 1)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(min(9.5, 2.4 + 0.55 * n * len(values)), 3.1), layout="constrained")
        ax = fig.subplots()
        if flattest is not None:
            ax.axvspan(flattest - 0.45, flattest + 0.45, color="#fde9c8", zorder=0, label="student furthest behind")
        for k, (label, color, cis) in enumerate(series):
            offset = (k - (n - 1) / 2) * min(0.8 / n, 0.18)
            pts = [(i + offset, ci) for i, ci in enumerate(cis) if ci is not None]
            if not pts:
                continue
            xs, ys = [x for x, _ in pts], [ci[0] for _, ci in pts]
            err = [[max(0, ci[0] - ci[1]) for _, ci in pts], [max(0, ci[2] - ci[0]) for _, ci in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, label=label, markersize=5, capsize=2.5)
        ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=20 if len(values) > 6 else 0)
        ax.set(xlim=(-0.6, len(values) - 0.4), title=f"NLL by {field}", ylabel="NLL (nats/token)")
        ax.grid(axis="x", visible=False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)


def qq_uniform(series: Sequence[tuple[str, str, Sequence[float]]], alphas: Sequence[float] = (0.01, 0.001)) -> bytes:
    """QQ plot of null p-values against Uniform(0, 1) on log-log axes (series: label, colour, p-values): a valid
    test lies on the diagonal; points above the diagonal at small p are false positives beyond α. The α levels
    are marked, because the left tail is what a detection threshold sees."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.6, 4.2), layout="constrained")
        ax = fig.subplots()
        smallest_x = smallest_y = 1.0
        for label, color, values in series:
            ps = sorted(max(float(p), 1e-300) for p in values)
            if not ps:
                continue
            expected = [(i + 1) / (len(ps) + 1) for i in range(len(ps))]
            smallest_x, smallest_y = min(smallest_x, expected[0]), min(smallest_y, ps[0])
            ax.plot(expected, ps, "o", markersize=2.8, color=color, label=f"{label} ({len(ps)} keys)", alpha=0.8)
        low_x, low_y = smallest_x / 2, max(min(smallest_y, smallest_x) / 2, 1e-300)
        ax.plot([low_x, 1], [low_x, 1], linestyle="--", color="#9aa0a6", linewidth=1, label="uniform")
        for alpha in alphas:
            ax.axhline(alpha, color="#e0a800", linewidth=0.8, linestyle=":")
            ax.annotate(f"α = {alpha:g}", (1, alpha), xytext=(-4, 3), textcoords="offset points", ha="right",
                        fontsize=8, color="#8a6d00")
        ax.set(xscale="log", yscale="log", xlim=(low_x, 1.05), ylim=(low_y, 1.05), title="null p-values vs uniform",
               xlabel="expected quantile (uniform)", ylabel="observed p-value")
        ax.legend(loc="lower right")
        return _png(fig)


def utility_vs_gain(curves: Sequence[tuple[str, str, str, Sequence[tuple[float, float, float, float]]]]) -> bytes:
    """The distillation game: each defense's cost to its users (x: the teacher's own accuracy, %) against what a
    thief still gains (y: points over the untrained student, with its 95% interval as a vertical bar). curves:
    (label, colour, line style, points (x, y, y_low, y_high) in strength order, the undefended point first)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.2, 4.6), layout="constrained")
        ax = fig.subplots()
        for label, color, style, points in curves:
            if not points:
                continue
            xs, ys, lows, highs = zip(*points, strict=True)
            ax.plot(xs, ys, style, color=color, label=label, alpha=0.9, markersize=4)
            ax.vlines(xs, lows, highs, color=color, alpha=0.25, linewidth=3)
        ax.axhline(0, color="#9aa0a6", linewidth=0.8)
        ax.set(xlabel="teacher utility: its own accuracy on the thief's problems (%)",
               ylabel="thief's gain over the untrained student (points)",
               title="each defense's cost to its users vs the thief's gain")
        ax.legend(fontsize=7, ncol=2)
        return _png(fig)
