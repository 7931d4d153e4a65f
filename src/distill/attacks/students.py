"""The thieves of the distillation game: which of a defended teacher's traces each one trains on.

All three fine-tune the same student with the same loop, steps and optimizer (`distill train`, objective seqkd); they
differ only in their training rows, so the table isolates what each thief does with the traces:

  passive    every trace the teacher returned, as it came (plain SFT on the defended outputs);
  adaptive   traces resampled with replacement ∝ exp(β·z_i), z_i the standardised value of `value.py` (the
             Distillation Game's finite-difference alignment with a held-out gradient): unbiased for the weighted
             loss Σ w_i·NLL_i that the authors minimise, with the same number of rows as the passive thief;
  verifier   only the traces a verifier accepts (the reasoning recipe's rejection sampling), resampled with
             replacement to the passive thief's row count when fewer are kept, so every thief sees as many rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

THIEVES = ("passive", "adaptive", "verifier")


def adaptive_weights(values: Sequence[float], beta: float = 1.0, sign: int = 1) -> list[float]:
    """w_i ∝ exp(sign·β·z_i), normalised to mean 1; z: the values standardised (all equal → all weights 1).
    `sign=-1` reproduces the literal sign of the authors' code (see value.py)."""
    if sign not in (1, -1):
        raise ValueError("sign is +1 (descent) or -1 (the authors' code read literally)")
    n = len(values)
    if n == 0:
        return []
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    z = [(v - mean) / sd if sd > 0 else 0.0 for v in values]
    raw = [math.exp(sign * beta * min(max(x, -10.0), 10.0)) for x in z]
    total = sum(raw)
    return [w * n / total for w in raw]


def resample(rows: Sequence[dict[str, Any]], weights: Sequence[float] | None, count: int, seed: int
             ) -> list[dict[str, Any]]:
    """`count` rows drawn with replacement ∝ weights (uniformly when None), deterministic in `seed`."""
    if not rows:
        raise ValueError("no rows to draw from")
    return random.Random(seed).choices(list(rows), weights=list(weights) if weights is not None else None, k=count)


def thief_rows(thief: str, rows: Sequence[dict[str, Any]], *, seed: int, values: Sequence[float] | None = None,
               beta: float = 1.0, sign: int = 1) -> list[dict[str, Any]]:
    """The training rows of one thief (module docstring), as many as `rows`. `rows` are `distill generate`
    samples (with their `accepted` verdict); `values` are needed for the adaptive thief."""
    if thief == "passive":
        return list(rows)
    if thief == "adaptive":
        if values is None or len(values) != len(rows):
            raise ValueError("the adaptive thief needs one value per row")
        return resample(rows, adaptive_weights(values, beta, sign), len(rows), seed)
    if thief == "verifier":
        kept = [r for r in rows if r.get("accepted")]
        if not kept:
            return []
        return kept if len(kept) >= len(rows) else kept + resample(kept, None, len(rows) - len(kept), seed)
    raise ValueError(f"unknown thief {thief!r}; one of {', '.join(THIEVES)}")
