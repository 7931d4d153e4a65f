"""The order slice values are shown in (distill.eval.slice_order): by the numbers they name, else as strings."""

from __future__ import annotations

import random

import pytest

from distill.eval.runner import LENGTH_BUCKETS
from distill.eval.slice_order import ordered_slice_values


def test_length_buckets_come_out_in_their_numeric_order_from_any_order() -> None:
    labels = [label for *_, label in LENGTH_BUCKETS]
    assert sorted(labels) != labels  # as strings they are out of order: the reason this module exists
    for seed in range(5):
        shuffled = labels[:]
        random.Random(seed).shuffle(shuffled)
        assert ordered_slice_values(shuffled) == labels


@pytest.mark.parametrize(("values", "expected"), [
    (["10", "2", "1", "10", "-3"], ["-3", "1", "2", "10"]),  # numbers numerically, each value once
    (["2.0", "2", "0.5"], ["0.5", "2", "2.0"]),  # equal values by their text
    (["50%", "5%", "100%"], ["5%", "50%", "100%"]),
    (["10 to 20 words", "1 to 5 words", "6 to 9 words"], ["1 to 5 words", "6 to 9 words", "10 to 20 words"]),
    (["512+ tokens", "<128 tokens", "128-511 tokens"], ["<128 tokens", "128-511 tokens", "512+ tokens"]),
    (["10", "2", "none"], ["10", "2", "none"]),  # not all numbers: strings
    (["10 tokens", "2 words"], ["10 tokens", "2 words"]),  # different units: strings
    (["tragedy", "comedy", "history"], ["comedy", "history", "tragedy"]),
    ([], []),
])
def test_values_that_all_name_numbers_sort_numerically_and_others_as_strings(values: list[str],
                                                                             expected: list[str]) -> None:
    assert ordered_slice_values(values) == expected
