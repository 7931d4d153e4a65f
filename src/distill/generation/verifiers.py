"""Verifiers: is a teacher's completion a correct answer to its prompt? The judge of rejection sampling in
`distill generate` (docs/generate.md, "Verifiers").

A verifier is a function `(record, completion) -> Verdict`. The record is the prompt's record (a dict, or an eval
`TaskItem`); the reference answer lives in one of its fields (`answer` unless the spec names another). Each built-in
is chosen by `kind` in a small spec a recipe section can hold as it is (recipe/verifier.py); `build_verifier` turns a
spec (or just a kind's name) into the function, checking up front what needs no record — the import of a `python`
verifier, a fixed regex, a reasoning-gym dataset name — so a typo fails before any generation does. Answers are read
with the eval tasks' own helpers (eval/tasks/scoring.py), so a generated trace and an evaluated answer are judged
alike.
"""

from __future__ import annotations

import json
import numbers as abstract
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from distill.errors import DataError, RecipeError
from distill.eval.tasks.scoring import extract_text, marked_answers, normalise, numbers
from distill.eval.tasks.spec import import_callable, rg_dataset
from distill.recipe.verifier import (
    ExactSpec,
    FinalNumberSpec,
    PythonSpec,
    ReasoningGymSpec,
    RegexSpec,
    verifier_spec,
)


@dataclass(frozen=True)
class Verdict:
    """One completion judged. `accepted` decides whether rejection sampling keeps it; `score` in [0, 1] goes into
    the row's provenance (a reasoning-gym scorer or a user function may give partial credit); `extracted` is the
    answer read from the completion (None when none was found); `reason` says why, for people reading the rows."""

    accepted: bool
    score: float
    extracted: str | None
    reason: str


Verifier = Callable[[Any, str], Verdict]
_TOLERANCE = 1e-9  # float round-off below a threshold still reaches it, as in eval/tasks/scoring.score


def build_verifier(raw: Any) -> Verifier:
    """The verifier a spec (or mapping, or kind name) describes, its record-free parts checked now (RecipeError)."""
    spec = verifier_spec(raw)
    return VERIFIERS[type(spec)](spec)


# ------------------------------------------------------------------------------------------------- built-ins


def _reasoning_gym(spec: ReasoningGymSpec) -> Verifier:
    """The task's own `score_answer` on the extracted answer: the check its generator was written with."""
    config = json.dumps(spec.config, sort_keys=True)
    if spec.dataset is not None:
        _recipe_problem(rg_dataset, spec.dataset, config, 0, 1, "verifier.dataset")

    def verify(record: Any, completion: str) -> Verdict:
        entry = _field(record, spec.entry_field, "entry_field", "reasoning_gym")
        meta = entry.get("metadata") if isinstance(entry, Mapping) else None
        name = spec.dataset or (meta.get("source_dataset") if isinstance(meta, Mapping) else None)
        if not isinstance(entry, Mapping) or not name:
            raise DataError(f"{_which(record)}: `{spec.entry_field}` is not a reasoning-gym item with "
                            "metadata.source_dataset; set the verifier's `dataset`, or `entry_field`")
        scorer = rg_dataset(name, config, 0, 1, "verifier.dataset")
        extracted = _extract(spec.extract, completion)
        score = float(scorer.score_answer(extracted, entry=dict(entry))) if extracted else 0.0
        return _graded(score, spec.threshold, extracted or None, f"{name}.score_answer")

    return verify


def _final_number(spec: FinalNumberSpec) -> Verifier:
    """The completion's final number equals the reference's, exactly as fractions (`1,000` = `1000.0`, `3/4` =
    `0.75`); a string reference is read like a completion, so GSM8K's `…#### 72` answers work as they are."""

    def verify(record: Any, completion: str) -> Verdict:
        reference = _field(record, spec.answer_field, "answer_field", "final_number")
        expected = _reference_number(reference, record, spec.answer_field)
        found = final_number(completion)
        if found is None:
            return Verdict(False, 0.0, None, "no number in the completion")
        text, value = found
        same = value == expected
        return Verdict(same, float(same), text, f"{text} {'=' if same else '!='} {expected}")

    return verify


def _exact(spec: ExactSpec) -> Verifier:
    """String equality after the eval tasks' normalisation (scoring.normalise): wrapping quotes, `*`, backticks,
    `$` and a final period dropped, case folded, runs of whitespace made one space, numbers spelled one way."""

    def verify(record: Any, completion: str) -> Verdict:
        reference = str(_field(record, spec.answer_field, "answer_field", "exact"))
        extracted = _extract(spec.extract, completion)
        same = bool(extracted) and normalise(extracted) == normalise(reference)
        return Verdict(same, float(same), extracted or None, f"{extracted!r} {'=' if same else '!='} {reference!r}")

    return verify


def _regex(spec: RegexSpec) -> Verifier:
    """A pattern the completion must match: a format check (fixed `pattern`) or a per-prompt one (in the record).
    The extracted answer is group 1 when the pattern has a group, else the whole match."""
    fixed = _compile(spec.pattern, "verifier.pattern", RecipeError) if spec.pattern is not None else None

    def verify(record: Any, completion: str) -> Verdict:
        pattern = fixed or _compile(str(_field(record, spec.answer_field, "answer_field", "regex")),
                                    f"{_which(record)}: `{spec.answer_field}`", DataError)
        m = pattern.fullmatch(completion.strip()) if spec.match == "fullmatch" else pattern.search(completion)
        if m is None:
            return Verdict(False, 0.0, None, f"no {spec.match} of {pattern.pattern!r}")
        return Verdict(True, 1.0, m.group(1) if pattern.groups else m.group(0), f"{spec.match} of {pattern.pattern!r}")

    return verify


def _python(spec: PythonSpec) -> Verifier:
    """Any check of your own: a bool is the verdict, a float a score accepted at `threshold`, a Verdict kept as is."""
    function = _recipe_problem(import_callable, spec.function, "verifier.function")
    if not callable(function):
        raise RecipeError(f"verifier.function: {spec.function!r} is a {type(function).__name__}, not callable; "
                          "name a function as `module:function`")

    def verify(record: Any, completion: str) -> Verdict:
        got = function(record, completion)
        if isinstance(got, bool):
            return Verdict(got, float(got), None, f"{spec.function} returned {got}")
        if isinstance(got, Verdict | abstract.Real):
            score = got.score if isinstance(got, Verdict) else float(got)
            if not 0.0 <= score <= 1.0:
                raise DataError(f"verifier {spec.function} scored {_which(record)} {score}, outside [0, 1]")
            return got if isinstance(got, Verdict) else _graded(score, spec.threshold, None, spec.function)
        raise DataError(f"verifier {spec.function} returned a {type(got).__name__} for {_which(record)}; "
                        "return a bool, a float in [0, 1] or a Verdict")

    return verify


# keyed by spec class: a kind's name is written once, in its spec (recipe/verifier.py)
VERIFIERS: dict[type, Callable[[Any], Verifier]] = {
    ReasoningGymSpec: _reasoning_gym, FinalNumberSpec: _final_number, ExactSpec: _exact, RegexSpec: _regex,
    PythonSpec: _python}


# --------------------------------------------------------------------------------------------------- helpers


def final_number(text: str) -> tuple[str, Fraction] | None:
    """The final answer of `text` as a number (its text, its value): the first number of the strongest marked answer
    that holds one (`<answer>…</answer>`, `#### 42`, `\\boxed{42}`, `answer is 42` / `answer: 42`), else the last
    number in the text; None without any number (see scoring.numbers for what counts as one)."""
    for span in marked_answers(text):
        if found := numbers(span):
            return found[0]
    found = numbers(text)
    return found[-1] if found else None


def _reference_number(reference: Any, record: Any, field: str) -> Fraction:
    if isinstance(reference, abstract.Real) and not isinstance(reference, bool):
        try:
            return Fraction(str(reference))
        except ValueError:  # nan, inf
            pass
    elif isinstance(reference, str) and (found := final_number(reference)) is not None:
        return found[1]
    raise DataError(f"{_which(record)}: `{field}` is {reference!r}, not a number; the final_number verifier needs one")


def _extract(mode: str, completion: str) -> str:
    if mode == "final":
        return next(iter(marked_answers(completion)), "")
    return extract_text(mode, completion)


def _graded(score: float, threshold: float, extracted: str | None, what: str) -> Verdict:
    accepted = score >= threshold - _TOLERANCE
    return Verdict(accepted, score, extracted, f"{what} gave {score:g} ({'>=' if accepted else '<'} {threshold:g})")


def _field(record: Any, name: str, option: str, kind: str) -> Any:
    """The record's field `name`, or a DataError naming the field, the record and the option that chose it."""
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    if value is None:
        raise DataError(f"{_which(record)}: no field `{name}`, which the {kind} verifier reads (its `{option}`)")
    return value


def _which(record: Any) -> str:
    """A record as error messages name it: its `id`, else the start of its text."""
    rid = record.get("id") if isinstance(record, Mapping) else getattr(record, "id", None)
    if rid is not None:
        return f"record {rid!r}"
    text = repr(record)
    return f"record {text[:60]}{'…' if len(text) > 60 else ''}"


def _compile(pattern: str, where: str, error: type[Exception]) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise error(f"{where}: {pattern!r} is not a valid regex ({exc})") from None


def _recipe_problem(load: Callable[..., Any], *args: Any) -> Any:
    """`load(*args)`, with the DataError a spec-time check raises (eval's helpers) reported as the recipe's."""
    try:
        return load(*args)
    except DataError as exc:
        raise RecipeError(str(exc)) from None
