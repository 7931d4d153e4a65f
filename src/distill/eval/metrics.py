"""Metrics as functions of column totals, and their bootstrap intervals over documents.

Each metric maps the totals of a model's per-document columns (see `doc_stats`) to a number; being a function of
totals, it is exact on the full set and cheap to recompute on every bootstrap resample. Paired differences and the
gap recovered resample the *same* documents for all the models involved, which is what makes "KD beat the
baseline" a statement with an interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from distill.eval.bootstrap import Interval, bootstrap_ci
from distill.eval.doc_stats import BIN_COLUMNS, ECE_BINS, DocStats

Statistic = Callable[[np.ndarray], np.ndarray]


def _ratio(columns: tuple[str, ...], numerator: str) -> Statistic:
    n, d = columns.index(numerator), columns.index("tokens")
    return lambda t: t[..., n] / t[..., d]


def _ece(columns: tuple[str, ...]) -> Statistic:
    """Expected calibration error, Σ_b |Σconfidence_b − Σcorrect_b| / N: the token-weighted mean over bins of
    |mean confidence − accuracy|, which is linear in the per-bin sums."""
    first = columns.index(BIN_COLUMNS[0])
    d = columns.index("tokens")

    def ece(t: np.ndarray) -> np.ndarray:
        bins = t[..., first:first + 3 * ECE_BINS].reshape(*t.shape[:-1], ECE_BINS, 3)
        return np.abs(bins[..., 1] - bins[..., 2]).sum(-1) / t[..., d]

    return ece


# name → (column it needs, builder). Field names are stable: they appear in eval.json and summary.json.
METRICS: dict[str, tuple[str, Callable[[tuple[str, ...]], Statistic]]] = {
    "nll": ("nll", lambda c: _ratio(c, "nll")),  # nats per predicted token
    "top1_acc": ("correct", lambda c: _ratio(c, "correct")),  # top-1 next-token accuracy against the data
    "ece": (BIN_COLUMNS[0], _ece),
    "agreement": ("agree", lambda c: _ratio(c, "agree")),  # top-1 equals the reference model's top-1
    "kl_forward": ("kl_forward", lambda c: _ratio(c, "kl_forward")),  # KL(reference ‖ model), nats/token
    "kl_reverse": ("kl_reverse", lambda c: _ratio(c, "kl_reverse")),  # KL(model ‖ reference), nats/token
}
DERIVED = {"ppl": ("nll", np.exp)}  # perplexity = exp(nll); its interval is the mapped NLL interval


def available(stats: DocStats) -> list[str]:
    return [name for name, (column, _) in METRICS.items() if stats.has(column)]


def statistic(stats: DocStats, name: str) -> Statistic:
    return METRICS[name][1](stats.columns)


def point(stats: DocStats, name: str) -> float:
    return float(statistic(stats, name)(stats.values.sum(0)))


def metric_intervals(stats: DocStats, *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Interval]:
    out = {name: bootstrap_ci(stats.values, statistic(stats, name), seed=seed, n_resamples=n_resamples)
           for name in available(stats)}
    for name, (base, fn) in DERIVED.items():
        out[name] = out[base].map(fn)
    return out


def paired_intervals(a: DocStats, b: DocStats, *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Interval]:
    """a − b for every metric both have, documents resampled jointly."""
    common = [m for m in available(a) if m in available(b)]
    return {name: joint_interval([a, b], name, lambda x, y: x - y, seed=seed, n_resamples=n_resamples)
            for name in common}


def gap_recovered(student: DocStats, baseline: DocStats, reference: DocStats, *, seed: int = 0,
                  n_resamples: int = 2000) -> Interval:
    """(NLL_baseline − NLL_student) / (NLL_baseline − NLL_reference): the share of the baseline's gap to the
    teacher that the student closes (1 = matches the teacher, 0 = no better than the baseline, < 0 = worse)."""
    return joint_interval([student, baseline, reference], "nll", lambda s, b, r: (b - s) / (b - r), seed=seed,
                          n_resamples=n_resamples)


def joint_interval(parts: list[DocStats], name: str, combine: Callable[..., np.ndarray], *, seed: int = 0,
                   n_resamples: int = 2000) -> Interval:
    """Interval of combine(metric of part 1, metric of part 2, …) with the same documents resampled for all parts
    (their rows must be the same documents, in the same order)."""
    if len({p.n_docs for p in parts}) != 1:
        raise ValueError("joint intervals need the same documents for every model")
    fns = [statistic(p, name) for p in parts]
    edges = np.cumsum([0] + [len(p.columns) for p in parts])

    def joint(t: np.ndarray) -> np.ndarray:
        return combine(*(fn(t[..., edges[i]:edges[i + 1]]) for i, fn in enumerate(fns)))

    return bootstrap_ci(np.hstack([p.values for p in parts]), joint, seed=seed, n_resamples=n_resamples)


def calibration_bins(stats: DocStats) -> list[dict[str, float]]:
    """The reliability diagram's data: per equal-width confidence bin, token count, mean confidence, accuracy."""
    totals = stats.values.sum(0)
    first = stats.index(BIN_COLUMNS[0])
    bins = totals[first:first + 3 * ECE_BINS].reshape(ECE_BINS, 3)
    return [{"lo": b / ECE_BINS, "hi": (b + 1) / ECE_BINS, "count": int(count),
             "confidence": float(conf / count) if count else None, "accuracy": float(hits / count) if count else None}
            for b, (count, conf, hits) in enumerate(bins)]
