"""Duplicate completions in `distill generate`: exact duplicates are caught through the documented normalisation,
near duplicates through MinHash confirmed by their estimate, per prompt or globally, deterministically, and a
resumed run rebuilt from its kept rows judges the rest of the stream as the uninterrupted run does."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from distill.generation.dedup import Decision, DedupCounts, Deduplicator, normalise, shingles
from distill.recipe.dedup import DedupSpec

SOLUTION = ("So we start from the twelve apples in the basket and remove the three that are bruised which leaves nine "
            "apples then we share them equally between three friends so each friend gets three apples and the "
            "answer is three")
OTHER_SOLUTION = ("Each friend gets three apples: twelve minus three bruised ones is nine, and nine divided by three "
                  "people is three apiece, since three times three makes nine, so the answer is three")
WORDS = sorted(set(SOLUTION.split() + OTHER_SOLUTION.split()))


def _jaccard(a: str, b: str, n: int = 3) -> float:
    x, y = shingles(normalise(a), n), shingles(normalise(b), n)
    return len(x & y) / len(x | y)


def _stream(seed: int = 0, size: int = 200) -> list[tuple[str, int, str]]:
    """~200 (prompt id, sample index, text) over 5 prompts: fresh texts of 60–100 words, copies re-spaced and
    re-cased, copies with 1 to 4 words changed (from clearly near to clearly not); most copies under their source's
    prompt, some under another."""
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []
    while len(texts) < size:
        kind = rng.random()
        prompt, source = rng.choice(texts) if texts else ("", "")
        prompt = prompt if rng.random() < 0.7 else f"p{rng.randrange(5)}"
        if texts and kind < 0.2:
            texts.append((prompt, source.upper().replace(" ", "  \n")))
        elif texts and kind < 0.6:
            words = source.split()
            for _ in range(rng.randint(1, 4)):
                words[rng.randrange(len(words))] = rng.choice(WORDS) + "x"
            texts.append((prompt, " ".join(words)))
        else:
            texts.append((f"p{rng.randrange(5)}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 100)))))
    rng.shuffle(texts)
    seen: dict[str, int] = {}
    stream = []
    for prompt, text in texts:
        seen[prompt] = seen.get(prompt, -1) + 1
        stream.append((prompt, seen[prompt], text))
    return stream


def _decide(stream, spec: DedupSpec | None = None, dedup: Deduplicator | None = None) -> list[Decision]:
    dedup = dedup or Deduplicator(spec)
    return [dedup.offer(prompt, index, text) for prompt, index, text in stream]


# ---------------------------------------------------------------------------------------------------------- exact


def test_exact_duplicates_after_whitespace_case_and_unicode_differences_are_caught():
    dedup = Deduplicator(DedupSpec(near=False))  # only the exact test can catch them
    assert dedup.offer("q", 0, "The answer is 42.\n\nSo  we are done.") == Decision("new")
    for i, variant in enumerate(["  the ANSWER is 42. so we are done.", "The\tanswer is 42.\u00a0So we are DONE.\n",
                                 "The answer is ４２. So we are done.", "THE ANSWER IS 42. SO WE ARE DONE."], 1):
        assert dedup.offer("q", i, variant) == Decision("exact", ("q", 0), 1.0), variant
    assert dedup.offer("q", 9, "The answer is 42. So we are done!").kind == "new"  # punctuation is not normalised
    assert normalise("Stra\u00dfe \ufb01ne\u3000\u2003X") == "strasse fine x"


# ----------------------------------------------------------------------------------------------------------- near


def test_one_word_changed_in_a_40_word_solution_is_a_near_duplicate_and_another_solution_is_kept():
    assert len(SOLUTION.split()) == 40
    edited = "Now" + SOLUTION.removeprefix("So")  # one word: one of 38 word 3-grams differs
    assert _jaccard(SOLUTION, edited) == pytest.approx(37 / 39)
    assert _jaccard(SOLUTION, OTHER_SOLUTION) < 0.1
    dedup = Deduplicator()
    assert dedup.offer("q", 0, SOLUTION).kind == "new"
    got = dedup.offer("q", 1, edited)
    assert (got.kind, got.duplicate_of) == ("near", ("q", 0))
    assert got.similarity == pytest.approx(37 / 39, abs=4 * (0.95 * 0.05 / 128) ** 0.5)  # 4 standard errors
    assert dedup.offer("q", 2, OTHER_SOLUTION) == Decision("new")


def test_a_candidate_is_a_duplicate_exactly_when_its_estimate_reaches_the_threshold():
    """LSH finds candidates below the threshold too (its false positives): each is confirmed by its estimate."""
    spec = DedupSpec(exact=False)
    rng = random.Random(1)
    words = SOLUTION.split()
    below = found_below = duplicates = 0
    for trial in range(60):
        edited = list(words)
        for _ in range(1 + trial % 4):  # 1–4 words changed: true Jaccard from ~0.85 down to ~0.55
            edited[rng.randrange(40)] = f"w{rng.randrange(10**6)}"
        dedup = Deduplicator(spec)
        dedup.offer("q", 0, SOLUTION)
        sketch = dedup._sketch(normalise(" ".join(edited)))
        estimate = sketch.jaccard(dedup._sketches[("q", 0)][1])
        candidate = ("q", 0) in dedup._lsh.query(sketch)
        got = dedup.offer("q", 1, " ".join(edited))
        assert got.duplicate == (candidate and estimate >= spec.threshold), (trial, estimate, candidate)
        below += estimate < spec.threshold
        found_below += candidate and estimate < spec.threshold
        duplicates += got.duplicate
    assert below > 10 and found_below > 0 and duplicates > 5  # the premise: LSH's false positives, and true ones


@pytest.mark.parametrize(("positions", "jaccard", "low", "high"), [([1], 36 / 40, 0.9, 1.0),
                                                                   ([1, 10, 20], 30 / 46, 0.0, 0.0)])
def test_pairs_at_a_given_jaccard_are_found_at_the_documented_rate(positions, jaccard, low, high):
    """docs/generate.md's table: at true Jaccard 0.9, ~96% (datasketch's even LSH weights would find ~80%)."""
    rng = random.Random(3)
    dedup = Deduplicator(DedupSpec(exact=False))
    found = 0
    for prompt in range(200):
        words = [f"t{rng.randrange(10**9)}" for _ in range(40)]
        original = " ".join(words)
        for position in positions:
            words[position] = f"t{rng.randrange(10**9)}"
        assert _jaccard(original, " ".join(words)) == pytest.approx(jaccard)
        dedup.offer(prompt, 0, original)
        found += dedup.offer(prompt, 1, " ".join(words)).duplicate
    assert low <= found / 200 <= high, found


# ---------------------------------------------------------------------------------------------------------- scope


@pytest.mark.parametrize("spec", [DedupSpec(), DedupSpec(near=False), DedupSpec(exact=False)],
                         ids=["both", "exact", "near"])
def test_per_prompt_scope_keeps_the_same_text_under_two_prompts_and_global_does_not(spec):
    per_prompt = Deduplicator(spec)
    assert [per_prompt.offer(p, 0, SOLUTION).kind for p in ("a", "b")] == ["new", "new"]
    assert per_prompt.offer("b", 1, SOLUTION).duplicate_of == ("b", 0)
    glob = Deduplicator(spec.model_copy(update={"scope": "global"}))
    assert glob.offer("a", 0, SOLUTION).kind == "new"
    got = glob.offer("b", 0, SOLUTION)
    assert got.duplicate_of == ("a", 0) and got.kind == ("exact" if spec.exact else "near")


# ---------------------------------------------------------------------------------------------------- determinism


_IN_A_SUBPROCESS = """
import json, sys
from distill.generation.dedup import Deduplicator
stream = json.load(sys.stdin)
dedup = Deduplicator()
print(json.dumps([[d.kind, d.duplicate_of, d.similarity] for d in (dedup.offer(*row) for row in stream)]))
"""


def test_two_fresh_deduplicators_decide_identically_on_a_shuffled_stream_here_and_in_another_process():
    stream = _stream()
    first = _decide(stream)
    assert first == _decide(stream)  # similarities included: any other permutation seed changes them
    kinds = {d.kind for d in first}
    assert kinds == {"new", "exact", "near"}, kinds
    assert len({d.similarity for d in first if d.kind == "near"}) > 5
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another set order of the LSH's candidates
    out = subprocess.run([sys.executable, "-c", _IN_A_SUBPROCESS], input=json.dumps(stream), env=env, text=True,
                         capture_output=True, check=True, cwd=Path(__file__).parent).stdout
    assert json.loads(out) == [[d.kind, list(d.duplicate_of) if d.duplicate_of else None, d.similarity] for d in first]


# --------------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("scope", ["per_prompt", "global"])
@pytest.mark.parametrize("stop", [1, 57, 140])
def test_rebuilt_from_the_kept_rows_a_resumed_run_judges_the_rest_as_the_uninterrupted_run(scope, stop):
    spec = DedupSpec(scope=scope)
    stream = _stream(seed=2)
    uninterrupted = _decide(stream, spec)
    killed = Deduplicator(spec)
    kept = [row for row, d in zip(stream[:stop], _decide(stream[:stop], dedup=killed), strict=True) if not d.duplicate]
    resumed = Deduplicator(spec)
    for row in kept:  # the output's rows, in their order: all a restarted run has
        resumed.add_kept(*row)
    assert _decide(stream[stop:], dedup=resumed) == uninterrupted[stop:]
    assert sum(not d.duplicate for d in uninterrupted[stop:]) > 10  # the rest still keeps and removes some
    assert sum(d.duplicate for d in uninterrupted[stop:]) > 10
    assert resumed.counts.kept == sum(not d.duplicate for d in uninterrupted)


# ---------------------------------------------------------------------------------------------------- short texts


@pytest.mark.parametrize("spec", [DedupSpec(), DedupSpec(exact=False)], ids=["both", "near"])
def test_short_texts_do_not_crash_and_are_judged_exactly(spec):
    dedup = Deduplicator(spec)
    texts = ["42", "43", "42.", "4", "", " ", "x y", "x z", "yes", "Yes", "seventeen", "answer 42", "answer 43"]
    got = [dedup.offer("q", i, text) for i, text in enumerate(texts)]
    by_text = dict(zip(texts, got, strict=True))
    duplicates = {t: (d.kind, d.duplicate_of) for t, d in by_text.items() if d.duplicate}
    how = "exact" if spec.exact else "near"
    assert duplicates == {" ": (how, ("q", 4)), "Yes": (how, ("q", 8))}  # "" and " ", "yes" and "Yes": the same
    assert shingles("42", 3) == {b"42"} and shingles("x y", 3) == {b"x y"} and shingles("", 3) == {b""}
    assert shingles("answer 42", 3) == {b"ans", b"nsw", b"swe", b"wer", b"er ", b"r 4", b" 42"}


# ------------------------------------------------------------------------------------------------------- counters


def test_the_counters_count_kept_exact_and_near_duplicates():
    dedup = Deduplicator()
    assert dedup.counts == DedupCounts(kept=0, exact_duplicates=0, near_duplicates=0)
    dedup.add_kept("q", 0, SOLUTION)
    for i, text in enumerate([SOLUTION.upper(), "Now" + SOLUTION.removeprefix("So"), OTHER_SOLUTION, SOLUTION,
                              OTHER_SOLUTION.lower()], 1):
        dedup.offer("q", i, text)
    dedup.offer("r", 0, SOLUTION)  # another prompt: new
    assert dedup.counts == DedupCounts(kept=3, exact_duplicates=3, near_duplicates=1)
    off = Deduplicator(DedupSpec(exact=False, near=False))
    assert [off.offer("q", i, SOLUTION).kind for i in range(3)] == ["new"] * 3
    assert off.counts == DedupCounts(kept=3, exact_duplicates=0, near_duplicates=0)
