"""Exact and near-duplicate completions, removed as generation produces them (docs/generate.md, "Duplicates").

A `Deduplicator` is offered each accepted completion in turn, as `(prompt id, sample index, text)`, and says whether
it is new (it is then kept, and later ones are judged against it) or a duplicate of a completion kept earlier, and
which one. With `scope: per_prompt` only completions of the same prompt are compared; with `global`, all.

- **Exact**: the texts are equal after `normalise` (Unicode NFKC, then `str.casefold`, then every run of whitespace
  made one space, leading and trailing whitespace dropped); kept texts are remembered by a 16-byte BLAKE2b of that.
- **Near**: a `datasketch.MinHash` (seed `SEED`, `num_perm` permutations) of the text's shingles (`shingles`: its
  word n-grams, or for a text of fewer than n words its character n-grams) estimates the Jaccard similarity of two
  shingle sets with standard error sqrt(J(1-J)/num_perm) (≤ 1/(2 sqrt(num_perm)): 0.03 at J = 0.85 and 128).
  `MinHashLSH` finds the candidates; LSH alone has false positives (and false negatives), so a candidate counts only
  when its estimate is ≥ threshold, and the most similar one (then the earliest kept) is named.

The state is a function of the kept completions and their order, nothing else: a resumed run rebuilds it by
`add_kept` of the rows already written, in their order, and then judges the rest as the uninterrupted run did.
Sketches are deterministic across runs and processes (a fixed seed, SHA-1 of the shingles' bytes, ties broken by
keep order rather than by set order); they depend on the datasketch version (2.0 changed its permutation scheme).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

from datasketch import LeanMinHash, MinHash, MinHashLSH

from distill.recipe.dedup import DedupSpec

SEED = 1  # datasketch's own default, so a sketch made with MinHash(num_perm=...) alone matches ours
# The LSH's band layout is chosen to favour recall (false negatives weigh 0.9, false positives 0.1): its false
# positives only cost a comparison, as each candidate is confirmed; at the defaults (11 bands of 11 rows) a pair at
# true Jaccard 0.9 is then found 96% of the time (80% with datasketch's even weights), near the 97% of comparing with
# every kept completion (docs/generate.md, "Duplicates").
LSH_WEIGHTS = (0.1, 0.9)

Key = tuple[Hashable, int]  # (prompt id, sample index): which completion


@dataclass(frozen=True)
class Decision:
    """One completion judged: `new` (kept), or an `exact` / `near` duplicate of the kept completion `duplicate_of`,
    with `similarity` the estimated Jaccard of the two (1.0 for an exact duplicate)."""

    kind: Literal["new", "exact", "near"]
    duplicate_of: Key | None = None
    similarity: float | None = None

    @property
    def duplicate(self) -> bool:
        return self.kind != "new"


@dataclass(frozen=True)
class DedupCounts:
    """For the manifest. After a resume, `kept` includes the rebuilt rows (`add_kept`); the duplicate counts cover
    only the completions this object was offered."""

    kept: int
    exact_duplicates: int
    near_duplicates: int


def normalise(text: str) -> str:
    """What the exact test compares, and what is shingled: NFKC (full-width `４２` → `42`, the ligature `ﬁ` → `fi`),
    case folded (`ß` → `ss`), runs of whitespace (str.split's: spaces, tabs, newlines, …) made one space, ends
    stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def shingles(normalised: str, n: int) -> set[bytes]:
    """The set MinHash sketches: the text's word n-grams (words joined by one space); for a text of fewer than n
    words, its character n-grams instead (the whole text when shorter than n characters, so never an empty set). The
    two kinds never meet: a word n-gram holds n-1 spaces, a character n-gram of a shorter text fewer."""
    words = normalised.split(" ")
    if normalised and len(words) >= n:
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    elif len(normalised) > n:
        grams = [normalised[i:i + n] for i in range(len(normalised) - n + 1)]
    else:
        grams = [normalised]
    return {gram.encode("utf-8") for gram in grams}


class Deduplicator:
    """Streaming exact and near-duplicate filter over kept completions (module docstring). `offer` judges one
    completion and keeps it when new; `add_kept` keeps one unjudged (rebuilding the state of a resumed run)."""

    def __init__(self, spec: DedupSpec | None = None):
        self.spec = spec or DedupSpec()
        self._exact: dict[tuple[Hashable, bytes], Key] = {}  # (scope group, digest) → first kept with that text
        self._sketches: dict[Key, tuple[int, LeanMinHash]] = {}  # kept → (keep order, sketch)
        self._template = MinHash(num_perm=self.spec.num_perm, seed=SEED)
        self._lsh = MinHashLSH(threshold=self.spec.threshold, num_perm=self.spec.num_perm, weights=LSH_WEIGHTS)
        self._kept = self._exact_duplicates = self._near_duplicates = 0

    @property
    def counts(self) -> DedupCounts:
        return DedupCounts(self._kept, self._exact_duplicates, self._near_duplicates)

    def offer(self, prompt_id: Hashable, sample_index: int, text: str) -> Decision:
        """Judge a completion against those kept before it; keep it when it is new."""
        key, normalised = (prompt_id, sample_index), normalise(text)
        digest = self._digest(normalised) if self.spec.exact else None
        if digest is not None and (earlier := self._exact.get((self._group(prompt_id), digest))) is not None:
            self._exact_duplicates += 1
            return Decision("exact", earlier, 1.0)
        sketch = self._sketch(normalised) if self.spec.near else None
        if sketch is not None and (near := self._nearest(prompt_id, sketch)) is not None:
            self._near_duplicates += 1
            return Decision("near", *near)
        self._keep(key, digest, sketch)
        return Decision("new")

    def add_kept(self, prompt_id: Hashable, sample_index: int, text: str) -> None:
        """Record a completion kept earlier (a row already in the output), without judging it. Feed a resumed run's
        rows in their order, and its state is the uninterrupted run's."""
        normalised = normalise(text)
        self._keep((prompt_id, sample_index), self._digest(normalised) if self.spec.exact else None,
                   self._sketch(normalised) if self.spec.near else None)

    # -------------------------------------------------------------------------------------------------- internals

    def _group(self, prompt_id: Hashable) -> Hashable:
        return prompt_id if self.spec.scope == "per_prompt" else None

    @staticmethod
    def _digest(normalised: str) -> bytes:
        return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()

    def _sketch(self, normalised: str) -> LeanMinHash:
        sketch = self._template.copy()  # shares the permutations (drawing them anew: +75 µs a text, ~50%)
        sketch.update_batch(shingles(normalised, self.spec.ngram))
        return LeanMinHash(sketch)

    def _nearest(self, prompt_id: Hashable, sketch: LeanMinHash) -> tuple[Key, float] | None:
        """The kept completion in scope most similar to `sketch` (the earliest on a tie), if its estimated Jaccard
        reaches the threshold. LSH candidates in another prompt's scope are skipped."""
        best: tuple[float, int, Key] | None = None
        for key in self._lsh.query(sketch):
            if self.spec.scope == "per_prompt" and key[0] != prompt_id:
                continue
            order, kept = self._sketches[key]
            similarity = sketch.jaccard(kept)
            if similarity >= self.spec.threshold and (best is None or (similarity, -order) > (best[0], -best[1])):
                best = (similarity, order, key)
        return None if best is None else (best[2], best[0])

    def _keep(self, key: Key, digest: bytes | None, sketch: LeanMinHash | None) -> None:
        if digest is not None:
            self._exact.setdefault((self._group(key[0]), digest), key)
        if sketch is not None:
            self._sketches[key] = (self._kept, sketch)
            self._lsh.insert(key, sketch)
        self._kept += 1
