"""The order a slice field's values are shown in: by the numbers they name, not letter by letter.

Sorted as strings, the length buckets come out "128–255 tokens", "256–511 tokens", "<128 tokens", "≥512 tokens", and
a numeric field puts "10" before "2". Values that all read as a number or a range of numbers with the same unit —
"2", "10"; "<128 tokens", "128–255 tokens", "≥512 tokens" (eval/runner.py's LENGTH_BUCKETS) — are ordered by that
range; any other field is sorted as strings. Only the values are read, so a result file written before this order
existed is shown in it too. Imports nothing of distill: the runner (which writes slices) and the report (which shows
them) can both use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?:\s*(?P<unit>[^\d\s.+\-<>≤≥–—][^\d]*?))?"  # "tokens", "%", "words": no digits, same for every value
_BELOW = re.compile(rf"(?:<|≤|<=)\s*(?P<hi>{_NUMBER}){_UNIT}")
_ABOVE = re.compile(rf"(?:>|≥|>=)\s*(?P<lo>{_NUMBER}){_UNIT}")
_RANGE = re.compile(rf"(?P<lo>{_NUMBER})\s*(?:–|—|-|to)\s*(?P<hi>{_NUMBER}){_UNIT}")
_PLUS = re.compile(rf"(?P<lo>{_NUMBER})\s*\+{_UNIT}")  # "512+ tokens"
_ONE = re.compile(rf"(?P<lo>{_NUMBER}){_UNIT}")


def ordered_slice_values(values: Iterable[str]) -> list[str]:
    """The distinct `values` of one slice field in display order: by the number or range each names when all of them
    name one in the same unit (ties, such as "2" and "2.0", by their text), else sorted as strings."""
    distinct = set(values)
    ranges = {v: r for v in distinct if (r := _range(v)) is not None}
    if len(ranges) == len(distinct) and len({unit for *_, unit in ranges.values()}) == 1:
        return sorted(distinct, key=lambda v: (ranges[v][0], ranges[v][1], v))
    return sorted(distinct)


def _range(value: str) -> tuple[float, float, str] | None:
    """(low, high, unit) of "<128 tokens", "128–255 tokens", "≥512 tokens", "512+ tokens", "7" or "2.5 %"; None for
    anything else. An open end is infinite, so "<128" comes before "128–255" and "≥512" after "256–511"."""
    text = value.strip()
    for pattern in (_BELOW, _ABOVE, _RANGE, _PLUS, _ONE):
        if found := pattern.fullmatch(text):
            parts = found.groupdict()
            lo = float(parts["lo"]) if parts.get("lo") is not None else -math.inf
            hi = float(parts["hi"]) if parts.get("hi") is not None else lo if pattern is _ONE else math.inf
            return lo, hi, (parts["unit"] or "").strip()
    return None
