"""Bootstrap confidence intervals for metrics that are functions of per-document column sums.

Every evaluation metric in distill is computed from the column totals of a (n_docs, k) array of additive
per-document statistics (token counts, NLL sums, correct answers, ...): perplexity is a ratio of sums, not a mean of
per-document ratios. The unit of sampling is the document, so intervals resample whole rows.

Resampling is done by `scipy.stats.bootstrap`, but on the document *indices* rather than on the columns: a
resample becomes a vector of per-document counts, and its column totals are one matrix product `counts @ columns`.
That keeps every column of a document (and both models of a paired comparison) together, which is what scipy's
`paired=True` would do, at a fraction of the cost: scipy's paired mode gathers all k columns for every resample
(n_resamples × n_docs × k values, seconds for 5000 documents and 50 columns), where the counts need n_resamples ×
n_docs and one BLAS call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from distill.errors import DataError

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps column totals of shape (..., k) to the metric, shape (...). Must broadcast over leading axes."""

# Resamples are processed in batches of at most this many (resample, document) counts, so memory stays near
# 2 × 8 × _BATCH_CELLS bytes whatever the number of documents (the BCa jackknife is n_docs resamples of n_docs - 1).
_BATCH_CELLS = 1 << 21

# A bootstrap distribution whose spread is below this fraction of its magnitude is constant up to rounding: the
# interval is the point, and BCa (which divides by that spread) must not be asked.
_CONSTANT_RTOL = 1e-12


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval.

    `mean` is the statistic on the full sample, not the mean of the bootstrap distribution: that is the number
    reported everywhere else, and the interval says how far it could move."""

    mean: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}

    def map(self, fn: Callable[[float], float]) -> Interval:
        """Apply an increasing transform (e.g. `math.exp`: NLL → perplexity). Percentile-type intervals are
        equivariant under such transforms, so this is the interval of the transformed metric, without resampling
        again. A decreasing `fn` would swap the bounds, hence the check."""
        mapped = Interval(float(fn(self.mean)), float(fn(self.ci_low)), float(fn(self.ci_high)))
        if not mapped.ci_low <= mapped.mean <= mapped.ci_high and self.ci_low <= self.mean <= self.ci_high:
            raise ValueError(f"Interval.map needs an increasing function; it turned {self} into {mapped}")
        return mapped

    def __str__(self) -> str:
        # Enough decimals to show the width of the interval with two significant digits: "5.71 [5.62, 5.80]".
        width = self.ci_high - self.ci_low
        if not math.isfinite(width) or width <= 0:
            return f"{self.mean:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}]"
        decimals = min(max(1 - math.floor(math.log10(width)), 0), 12)
        return f"{self.mean:.{decimals}f} [{self.ci_low:.{decimals}f}, {self.ci_high:.{decimals}f}]"


def bootstrap_ci(columns: np.ndarray, statistic: Statistic, *, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0, method: str = "BCa") -> Interval:
    """Confidence interval of `statistic(columns.sum(0))`, resampling documents (rows of `columns`).

    BCa is the default because eval metrics are ratios on modest numbers of documents, whose bootstrap distributions
    are skewed and biased; BCa corrects both, the percentile method neither. When BCa is undefined (its jackknife
    has no spread, e.g. a metric that only one document moves) the percentile interval of the same resamples is
    returned instead. A statistic that does not vary across resamples gets a zero-width interval, not NaN.
    Deterministic given `seed` and the shape of `columns`."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    columns = _validated(columns, "columns")
    point = np.asarray(statistic(columns.sum(axis=0)), dtype=np.float64)
    if point.ndim != 0:
        raise ValueError(f"statistic must map column totals of shape (..., k) to shape (...); on totals of shape "
                         f"({columns.shape[1]},) it returned shape {point.shape}")
    if not np.isfinite(point):
        raise DataError(f"the metric is {float(point)} on the full sample of {columns.shape[0]} documents, so it has "
                        "no confidence interval: check the columns it divides by (are they all zero?)")
    on_indices = _statistic_of_resampled_indices(columns, statistic)
    batch = max(1, _BATCH_CELLS // columns.shape[0])
    common = dict(vectorized=True, confidence_level=confidence, batch=batch)
    with warnings.catch_warnings():
        # Degenerate distributions are detected and handled below; scipy's warnings about them would only be noise.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap((np.arange(columns.shape[0]),), on_indices, n_resamples=n_resamples,
                                 method=method, rng=np.random.default_rng(seed), **common)
        distribution = result.bootstrap_distribution
        _check_finite(distribution, columns.shape[0])
        if np.ptp(distribution) <= _CONSTANT_RTOL * np.max(np.abs(distribution)):
            return Interval(float(point), float(point), float(point))
        low, high = result.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)) and method.lower() == "bca":
            result = stats.bootstrap((np.arange(columns.shape[0]),), on_indices, n_resamples=0,
                                     bootstrap_result=result, method="percentile", **common)
            low, high = result.confidence_interval
    return Interval(float(point), float(low), float(high))


def paired_difference_ci(a: np.ndarray, b: np.ndarray, statistic: Statistic, **kwargs: Any) -> Interval:
    """Interval of `statistic(A totals) − statistic(B totals)` for two models evaluated on the same documents.

    Resampling the documents jointly cancels the variation that comes from which documents were drawn (hard
    documents are hard for both models), so the difference is far tighter than two separate intervals suggest;
    comparing overlapping per-model intervals would call most real improvements noise. `kwargs` go to
    `bootstrap_ci`."""
    a = _validated(a, "model A's columns")
    b = _validated(b, "model B's columns")
    if a.shape != b.shape:
        raise DataError(f"a paired comparison needs the same documents and columns for both models, but model A has "
                        f"shape {a.shape} and model B {b.shape} (documents × columns): evaluate both models on the "
                        "same eval set, rows in the same order")
    k = a.shape[1]

    def difference(totals: np.ndarray) -> np.ndarray:
        return np.asarray(statistic(totals[..., :k])) - np.asarray(statistic(totals[..., k:]))

    return bootstrap_ci(np.concatenate([a, b], axis=1), difference, **kwargs)


def _validated(columns: np.ndarray, name: str) -> np.ndarray:
    columns = np.asarray(columns, dtype=np.float64)
    if columns.ndim != 2 or columns.shape[1] == 0:
        raise DataError(f"{name} must be a 2-D array of per-document statistics (documents × columns), got shape "
                        f"{columns.shape}: stack one row per document")
    if columns.shape[0] < 2:
        raise DataError(f"a confidence interval needs at least 2 documents, {name} has {columns.shape[0]}: "
                        "evaluate on more documents")
    bad = np.argwhere(~np.isfinite(columns))
    if len(bad):
        doc, col = bad[0]
        raise DataError(f"{name} has {len(bad)} non-finite value(s), the first is {columns[doc, col]} at document "
                        f"{doc}, column {col}: per-document statistics must be finite (a NaN loss?)")
    return columns


def _statistic_of_resampled_indices(columns: np.ndarray, statistic: Statistic) -> Callable[..., np.ndarray]:
    """Build the `statistic(indices, axis)` that scipy resamples: document indices → counts → column totals.

    scipy calls it with indices of shape (..., m) on the last axis: m = n_docs for bootstrap resamples and the
    full sample, m = n_docs - 1 for the BCa jackknife (leave-one-out rows of `arange(n_docs)`)."""
    n_docs, k = columns.shape
    full_totals = columns.sum(axis=0)

    def on_indices(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.moveaxis(np.asarray(indices), axis, -1)
        rows = indices.reshape(-1, indices.shape[-1])
        if rows.shape[1] == n_docs - 1:
            # A jackknife row is every document but one, and the one is what the sum of indices lacks: its totals
            # are the full totals minus one row, n_docs × k work instead of a dense n_docs × n_docs count matrix.
            left_out = n_docs * (n_docs - 1) // 2 - rows.sum(axis=1)
            totals = full_totals - columns[left_out]
        else:
            offsets = np.arange(rows.shape[0])[:, None] * n_docs
            counts = np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * n_docs)
            totals = counts.reshape(rows.shape[0], n_docs).astype(np.float64) @ columns
        return np.asarray(statistic(totals.reshape(*indices.shape[:-1], k)), dtype=np.float64)

    return on_indices


def _check_finite(distribution: np.ndarray, n_docs: int) -> None:
    bad = int(np.count_nonzero(~np.isfinite(distribution)))
    if bad:
        raise DataError(f"the metric is undefined (NaN or infinite) on {bad} of {distribution.size} bootstrap "
                        f"resamples of the {n_docs} documents, e.g. a ratio whose denominator column is zero in most "
                        "documents: evaluate on more documents that the metric applies to")
