"""Contamination check: how much of an eval set already appears, word n-gram by word n-gram, in the training data.

A distilled student scored on documents it was trained on measures memorisation, not generalisation, so a report
should say how much overlap there is. The eval set is small and the training data large, so the eval n-grams are
hashed first and the training texts are streamed past them once: memory is proportional to the eval set, whatever
the size of the training data, and no training text is kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from distill.errors import DataError
from distill.eval.training_text import TrainingTexts

_WORD = re.compile(r"[^\W_]+")  # runs of Unicode letters and digits: \w without the underscore


@dataclass(frozen=True)
class Overlap:
    """Word n-gram overlap of an eval set with training data.

    `per_doc` says whether contamination is spread thin (many documents sharing a stock phrase) or concentrated
    (a few documents copied whole), which the single `fraction` cannot."""

    n: int  # n-gram length in words
    eval_ngrams: int  # n-grams in the eval documents, each occurrence counted
    overlapping_ngrams: int  # of those, how many also occur in the training texts
    per_doc: list[float]  # fraction of each eval document's n-grams found in training; 0.0 when shorter than n words

    @property
    def fraction(self) -> float:
        return self.overlapping_ngrams / self.eval_ngrams if self.eval_ngrams else 0.0

    @property
    def docs_with_overlap(self) -> int:
        return sum(fraction > 0 for fraction in self.per_doc)

    def docs_over(self, threshold: float) -> int:
        """Eval documents of which strictly more than `threshold` (a fraction) of the n-grams occur in training."""
        return sum(fraction > threshold for fraction in self.per_doc)

    def as_dict(self) -> dict[str, float | int]:
        """Flat and with stable field names, for eval reports and JSON."""
        return {
            "n": self.n,
            "eval_ngrams": self.eval_ngrams,
            "overlapping_ngrams": self.overlapping_ngrams,
            "fraction": self.fraction,
            "docs": len(self.per_doc),
            "docs_with_overlap": self.docs_with_overlap,
            "docs_over_half": self.docs_over(0.5),
            "max_doc_fraction": max(self.per_doc, default=0.0),
        }


def words(text: str) -> list[str]:
    """Split text into the words that n-grams are made of, so that a copy survives light reformatting.

    The text is NFKC-normalised (composed and decomposed accents, full-width and ligature forms compare equal) and
    case-folded (Unicode lowercase: "Straße" and "STRASSE" match); a word is a maximal run of Unicode letters and
    digits, and everything else (whitespace, punctuation, underscores, symbols) separates words. So "Don't stop!"
    is ["don", "t", "stop"]. Scripts written without spaces (Chinese, Japanese, Thai) become one word per run
    between punctuation, which makes their n-grams too coarse to be meaningful."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def ngram_overlap(train_texts: Iterable[str], eval_texts: Sequence[str], n: int = 8) -> Overlap:
    """Fraction of the eval set's word n-grams that occur anywhere in the training texts.

    `train_texts` is consumed once and may be a generator over a large corpus. N-grams never span two texts.
    Repeated n-grams within an eval document count once per occurrence, so a document that repeats a training
    sentence is as contaminated as the repetition makes it. The default n = 8 is long enough that a shared n-gram is
    rarely a coincidence of common phrasing."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"the n-gram length for the contamination check must be a whole number of words, at least 1, "
                        f"got n={n!r}: use n=8 (the default) or another positive integer")
    for name, texts in (("train_texts", train_texts), ("eval_texts", eval_texts)):
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a collection of texts, not one string (which would be read as one-letter "
                            f"texts): pass [{name}]")
    eval_hashes = [list(_ngram_hashes(words(text), n)) for text in eval_texts]
    wanted = {h for hashes in eval_hashes for h in hashes}
    found: set[int] = set()
    for text in train_texts:
        found.update(h for h in _ngram_hashes(words(text), n) if h in wanted)
    overlapping = [sum(h in found for h in hashes) for hashes in eval_hashes]
    return Overlap(
        n=n,
        eval_ngrams=sum(len(hashes) for hashes in eval_hashes),
        overlapping_ngrams=sum(overlapping),
        per_doc=[hits / len(hashes) if hashes else 0.0 for hits, hashes in zip(overlapping, eval_hashes, strict=True)],
    )


def _ngram_hashes(tokens: list[str], n: int) -> Iterator[int]:
    """64-bit blake2b of each n-gram: stable across processes (unlike `hash`) and 8 bytes instead of n strings. A false
    match needs an eval n-gram to collide with a training one, about 2**-64 per pair: negligible even for a billion
    training n-grams against a million eval ones. Words never contain spaces, so joining with one is unambiguous."""
    for start in range(len(tokens) - n + 1):
        digest = hashlib.blake2b(" ".join(tokens[start:start + n]).encode(), digest_size=8).digest()
        yield int.from_bytes(digest, "little")


def contamination_result(train_texts: Sequence[str] | None, eval_texts: Sequence[str], n: int = 8
                         ) -> tuple[dict[str, float | int] | None, str | None]:
    """The `contamination` block of an eval set and, when that is null, the reason (`contamination_reason`).

    Overlap is only computed from training text that could be read: with no training data, or training data none
    of whose records has text (a format the reader does not know, an empty field), the block is None and the reason
    says so. Reporting 0% there would claim the eval set is clean when nothing was compared. The block also says
    how many training records there were and how many had text, so a partly readable set is visible too."""
    if train_texts is None:
        return None, "no training data given: pass --train-data FILE, or evaluate a training run folder"
    if not isinstance(train_texts, TrainingTexts):
        train_texts = TrainingTexts(list(train_texts), "the training texts given", len(train_texts))
    if not train_texts.texts:
        return None, (f"none of the {train_texts.records} records of {train_texts.source} has text to compare "
                      f"(looked for {train_texts.looked_for}); pass --train-data with records in a format training "
                      "reads")
    block = ngram_overlap(train_texts.texts, eval_texts, n=n).as_dict()
    return block | {"train_records": train_texts.records, "train_records_with_text": len(train_texts.texts)}, None
