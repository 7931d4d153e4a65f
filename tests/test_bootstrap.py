"""Bootstrap intervals over documents: coverage, ratio-of-sums estimates, pairing, degenerate inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from distill.errors import DataError
from distill.eval.bootstrap import Interval, bootstrap_ci, paired_difference_ci


def mean_of_column_1(totals: np.ndarray) -> np.ndarray:
    """Columns are [1, x]: the mean of x over documents is a ratio of the two totals."""
    return totals[..., 1] / totals[..., 0]


def ones_and(values: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(values)), values])


def test_95_percent_intervals_cover_the_true_mean_of_a_skewed_distribution_about_95_percent_of_the_time():
    rng = np.random.default_rng(1234)
    repetitions, true_mean = 300, 2.0
    covered = 0
    for _ in range(repetitions):
        draws = rng.exponential(true_mean, size=60)
        interval = bootstrap_ci(ones_and(draws), mean_of_column_1, n_resamples=999, seed=int(rng.integers(2**31)))
        covered += interval.ci_low <= true_mean <= interval.ci_high
    # Binomial sd of the coverage over 300 repetitions is sqrt(.95 × .05 / 300) ≈ 0.013: the band is about ±3.5 sd
    # around 0.95 (BCa slightly undercovers a skewed mean at 60 draws, so the band is centred a little low).
    assert 0.90 <= covered / repetitions <= 0.99


def test_point_estimate_is_the_ratio_of_column_totals_not_the_mean_of_per_document_ratios():
    # [n_tokens, nll_sum] per document: totals 10 tokens and 13 nats → 1.3 (the mean of per-doc ratios would be 2.0).
    columns = np.array([[2.0, 3.0], [4.0, 2.0], [1.0, 5.0], [3.0, 3.0]])
    interval = bootstrap_ci(columns, lambda t: t[..., 1] / t[..., 0])
    assert interval.mean == pytest.approx(1.3)
    assert interval.ci_low < interval.mean < interval.ci_high


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_agrees_with_scipys_own_paired_bootstrap_over_the_columns(method):
    """The resampled-indices fast path (counts @ columns, closed-form jackknife) must give scipy's paired answer."""
    rng = np.random.default_rng(5)
    columns = np.column_stack([rng.integers(1, 50, size=80), rng.gamma(2.0, size=80), rng.random(80)])

    def statistic(totals):
        return totals[..., 1] / totals[..., 0] + totals[..., 2] / totals[..., 0]

    def reference_statistic(*samples, axis):
        return statistic(np.stack([s.sum(axis=axis) for s in samples], axis=-1))

    ours = bootstrap_ci(columns, statistic, n_resamples=999, seed=7, method=method)
    reference = stats.bootstrap(tuple(columns.T), reference_statistic, paired=True, vectorized=True,
                                n_resamples=999, method=method, rng=np.random.default_rng(7))
    assert ours.ci_low == pytest.approx(reference.confidence_interval.low, rel=1e-9)
    assert ours.ci_high == pytest.approx(reference.confidence_interval.high, rel=1e-9)


def test_a_constant_shift_between_two_models_gives_a_zero_width_interval_at_the_shift():
    rng = np.random.default_rng(0)
    b = ones_and(rng.normal(3.0, 1.0, size=50))
    a = b + np.array([0.0, 0.25])
    difference = paired_difference_ci(a, b, mean_of_column_1)
    assert difference.mean == pytest.approx(0.25, abs=1e-12)
    assert difference.ci_low == pytest.approx(0.25, abs=1e-12)
    assert difference.ci_high == pytest.approx(0.25, abs=1e-12)


def test_pairing_finds_a_difference_that_separate_intervals_hide():
    # Documents vary a lot in difficulty; model A is 0.1 better on each, up to small noise.
    rng = np.random.default_rng(3)
    difficulty = rng.normal(2.0, 1.0, size=60)
    a = ones_and(difficulty - 0.1 + rng.normal(0, 0.05, size=60))
    b = ones_and(difficulty + rng.normal(0, 0.05, size=60))
    interval_a, interval_b = bootstrap_ci(a, mean_of_column_1), bootstrap_ci(b, mean_of_column_1)
    assert interval_a.ci_high > interval_b.ci_low  # unpaired: the intervals overlap, nothing to conclude
    difference = paired_difference_ci(a, b, mean_of_column_1)
    assert difference.ci_high < 0  # paired: A is better
    assert difference.ci_low < -0.1 < difference.ci_high


def test_identical_documents_give_a_zero_width_interval():
    interval = bootstrap_ci(np.tile([[10.0, 23.0]], (20, 1)), lambda t: t[..., 1] / t[..., 0])
    assert interval == Interval(2.3, 2.3, 2.3)


def test_a_ratio_that_every_document_shares_gives_a_zero_width_interval_despite_rounding():
    tokens = np.arange(1.0, 41.0)
    interval = bootstrap_ci(np.column_stack([tokens, 0.1 * tokens]), lambda t: t[..., 1] / t[..., 0])
    assert interval.ci_low == interval.mean == interval.ci_high == pytest.approx(0.1)


def test_falls_back_to_the_percentile_interval_when_bca_is_undefined():
    # Two documents with x = 1: every jackknife total is 1 or 2, where the statistic is 0, so BCa's acceleration is
    # 0 / 0; bootstrap totals reach 3 and more, so the distribution itself is not constant.
    columns = np.column_stack([np.ones(30), np.r_[1.0, 1.0, np.zeros(28)]])

    def statistic(totals):
        return np.floor(totals[..., 1] / 3)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = stats.bootstrap((np.arange(30),), lambda i, axis: statistic(columns[i].sum(axis=-2)), vectorized=True,
                              n_resamples=2000, rng=np.random.default_rng(0))
    assert math.isnan(raw.confidence_interval.low)  # what scipy's BCa alone would report
    bca = bootstrap_ci(columns, statistic, method="BCa")
    assert bca == bootstrap_ci(columns, statistic, method="percentile")
    assert bca.ci_low <= bca.mean <= bca.ci_high < math.inf


def test_same_seed_same_interval_and_the_seed_matters():
    rng = np.random.default_rng(9)
    columns = ones_and(rng.exponential(size=40))
    assert bootstrap_ci(columns, mean_of_column_1, seed=1) == bootstrap_ci(columns, mean_of_column_1, seed=1)
    assert bootstrap_ci(columns, mean_of_column_1, seed=1) != bootstrap_ci(columns, mean_of_column_1, seed=2)


def test_one_document_is_rejected():
    with pytest.raises(DataError, match="at least 2 documents"):
        bootstrap_ci(np.array([[3.0, 4.0]]), mean_of_column_1)


def test_nan_in_columns_is_rejected_with_its_location():
    columns = ones_and(np.array([1.0, 2.0, np.nan, 4.0]))
    with pytest.raises(DataError, match="document 2, column 1"):
        bootstrap_ci(columns, mean_of_column_1)


def test_a_metric_undefined_on_many_resamples_is_rejected():
    # Only the last document has tokens: about 30% of resamples have no tokens at all.
    columns = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 2.0]])
    with pytest.raises(DataError, match="undefined"):
        bootstrap_ci(columns, lambda t: t[..., 1] / t[..., 0])


@pytest.mark.parametrize("b_shape", [(29, 2), (30, 3)])
def test_paired_difference_needs_the_same_documents_and_columns(b_shape):
    with pytest.raises(DataError, match="same documents"):
        paired_difference_ci(np.ones((30, 2)), np.ones(b_shape), mean_of_column_1)


def test_statistic_must_reduce_the_column_axis():
    with pytest.raises(ValueError, match="shape"):
        bootstrap_ci(np.ones((5, 2)), lambda t: t)


def test_interval_as_dict_map_and_str():
    interval = Interval(5.712, 5.6234, 5.8011)
    assert interval.as_dict() == {"mean": 5.712, "ci_low": 5.6234, "ci_high": 5.8011}
    assert str(interval) == "5.71 [5.62, 5.80]"
    perplexity = Interval(1.0, 0.5, 2.0).map(math.exp)
    assert perplexity == Interval(math.e, math.exp(0.5), math.exp(2.0))
    with pytest.raises(ValueError, match="increasing"):
        interval.map(lambda x: -x)
