"""The radioactivity detector: which (window, token) pairs to count, how many are green, and the exact p-value.

Why the rules (Sander et al. 2024, §4; facebookresearch/radioactive-watermark `get_scores_by_t_chunked`, reading
mode in `main_reed_wm.py`): the binomial test assumes every scored pair is an independent Bernoulli(γ) draw under
H0 (the key is independent of the suspect). A pair counted twice is the *same* draw counted twice, so repeated
pairs inflate the variance and the false-positive rate — hence de-duplication (each distinct pair once). A pair
whose window the suspect could read in its input next to a watermarked continuation is not independent of the key
either — hence the two input rules: windows of the prompt are never scored (closed mode), and in the teacher's text
only a window's first occurrence in a document is (open mode: after that, the watermarked token that followed it
is in the context the suspect reads). The optional filter keeps only windows that are frequent in the teacher's
watermarked output, where a distilled suspect has seen the most evidence.

With the keyed pair hash of `defenses/watermark.py` every distinct pair is green with probability exactly γ,
independently, so under H0 the green count of N distinct pairs is Binomial(N, γ) exactly and the p-value
P(X ≥ k) = I_γ(k, N − k + 1) (the regularised incomplete beta) is exact, not a z-score approximation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from scipy import special, stats

from distill.defenses.watermark import GreenList

Window = tuple[int, ...]
Pair = tuple[Window, int]

BINOMIAL_TEST = "one-sided exact binomial tail P(X ≥ k | N, γ) = I_γ(k, N − k + 1) (regularised incomplete beta)"


def binomial_tail(k: int, n: int, gamma: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, γ): scipy.special.betainc(k, n − k + 1, γ) for k ≥ 1, and 1 for k = 0."""
    if not 0 <= k <= n:
        raise ValueError(f"green count {k} outside [0, {n}]")
    return 1.0 if k == 0 else float(special.betainc(k, n - k + 1, gamma))


def log10_binomial_tail(k: int, n: int, gamma: float) -> float | None:
    """log10 P(X ≥ k), finite where the p-value itself underflows to 0 (None if even the log underflows)."""
    if k == 0:
        return 0.0
    value = float(stats.binom.logsf(k - 1, n, gamma)) / math.log(10)
    return value if math.isfinite(value) else None


@dataclass
class Stream:
    """The candidate pairs of one text, in order: a generation (closed mode) or a teacher document (open mode).
    `excluded`: windows never scored here (the prompt's); `first_window_only`: score only the first occurrence of
    each window (open mode)."""

    pairs: list[Pair]
    excluded: set[Window] = field(default_factory=set)
    first_window_only: bool = False


@dataclass
class Selection:
    """The pairs kept, in first-seen order, and how many each rule removed."""

    pairs: list[Pair]
    tokens_seen: int
    skipped: dict[str, int]


def select_pairs(streams: Iterable[Stream], *, dedup: bool = True, window_filter: set[Window] | None = None
                 ) -> Selection:
    """Apply the rules in order: prompt windows, repeated windows in a document (open mode; part of de-duplication),
    the frequency filter, repeated pairs over everything (de-duplication). `dedup=False` is the negative control."""
    kept: list[Pair] = []
    seen_pairs: set[Pair] = set()
    skipped = dict.fromkeys(("prompt_window", "repeated_window", "filtered", "repeated_pair"), 0)
    seen_tokens = 0
    for stream in streams:
        seen_windows: set[Window] = set()
        for window, token in stream.pairs:
            seen_tokens += 1
            if window in stream.excluded:
                skipped["prompt_window"] += 1
                continue
            if stream.first_window_only and dedup:
                if window in seen_windows:
                    skipped["repeated_window"] += 1
                    continue
                seen_windows.add(window)
            if window_filter is not None and window not in window_filter:
                skipped["filtered"] += 1
                continue
            if dedup:
                if (window, token) in seen_pairs:
                    skipped["repeated_pair"] += 1
                    continue
                seen_pairs.add((window, token))
            kept.append((window, token))
    return Selection(kept, seen_tokens, skipped)


def count_green(green: GreenList, pairs: Sequence[Pair], chunk: int = 1 << 16) -> int:
    """How many pairs are green under the key (vectorised, in chunks)."""
    total = 0
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        windows = torch.tensor([w for w, _ in part], dtype=torch.long).view(len(part), green.context_width)
        tokens = torch.tensor([t for _, t in part], dtype=torch.long)
        total += int(green.is_green(windows, tokens).sum())
    return total


def window_filter(documents: Iterable[Sequence[int]], context_width: int, top: int) -> set[Window]:
    """The `top` most frequent windows (k-grams of `context_width` tokens) of the teacher's watermarked text (the
    reference's create_filter: k-gram counts over the tokenised text, most frequent first; ties by first seen)."""
    counts: Counter[Window] = Counter()
    for ids in documents:
        counts.update(tuple(ids[i:i + context_width]) for i in range(len(ids) - context_width + 1))
    return {w for w, _ in counts.most_common(top)}


@dataclass
class Score:
    """A finished test: the selection's counts, the green count and the p-value."""

    tokens_seen: int
    skipped: dict[str, int]
    scored: int
    green: int
    gamma: float
    p_value: float
    log10_p_value: float | None


def score(green: GreenList, streams: Iterable[Stream], *, dedup: bool = True,
          window_filter: set[Window] | None = None) -> Score:
    """Select, count and test in one call."""
    selection = select_pairs(streams, dedup=dedup, window_filter=window_filter)
    n = len(selection.pairs)
    k = count_green(green, selection.pairs)
    return Score(selection.tokens_seen, selection.skipped, n, k, green.gamma, binomial_tail(k, n, green.gamma),
                 log10_binomial_tail(k, n, green.gamma))


def assumptions(mode: str, dedup: bool, filtered: bool) -> list[str]:
    """The assumptions of the binomial test as run, in words (recorded next to the p-value)."""
    out = ["H0: the watermark key is independent of the suspect (it never trained on text watermarked with it)",
           "under H0 each distinct (window, token) pair is green with probability γ, independently of every other "
           "pair (the keyed pair hash of defenses/watermark.py makes this exact for a random key)",
           "pairs independent under H0: valid only with de-duplication (each distinct pair counted once)"]
    if mode == "closed":
        out.append("windows that occur in the prompt are not scored (the suspect could copy them from its input)")
    else:
        out.append("only the first occurrence of a window in each teacher document is scored (later ones follow a "
                   "watermarked continuation the suspect can read in its context)")
    if filtered:
        out.append("the frequency filter is built from the teacher's text and assumed independent of which tokens "
                   "are green after each window (the paper's filter)")
    return out
