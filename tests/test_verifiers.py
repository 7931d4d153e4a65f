"""The verifiers of `distill generate`: each built-in accepts right answers and rejects wrong ones on real cases,
answers are extracted in the documented order, and every user mistake is one clear line."""

from __future__ import annotations

from fractions import Fraction

import pytest

from distill.errors import DataError, RecipeError
from distill.eval.tasks import BUILTIN_TASKS, task_items
from distill.eval.tasks.scoring import boxed, numbers
from distill.generation.verifiers import VERIFIERS, Verdict, build_verifier, final_number
from distill.recipe.verifier import KINDS, SPECS, FinalNumberSpec


def _one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------------ final_number


@pytest.mark.parametrize(("completion", "reference", "extracted"), [
    ("She has 6 * 7 = 42 apples.\n#### 42", 42, "42"),  # GSM8K's marker
    ("#### 1,234\n", "1234", "1,234"),  # thousands separator
    (r"So $x = \boxed{\frac{3}{4}}$. Check: 3 of 4 parts.", 0.75, r"\frac{3}{4}"),  # nested braces, a fraction
    (r"\boxed{1{,}000}", "1000", "1,000"),  # LaTeX's thousands separator
    ("Adding them up, the answer is 12 apples. (4 + 8 = 12, 12 - 1 = 11 is wrong)", "12", "12"),
    ("Answer:\n-7", -7, "-7"),  # negative, on the line after the phrase
    ("5 - 3 - 6 = -4", "-4", "-4"),  # last number, negative
    ("It is 5.0", 5, "5.0"),  # trailing .0
    ("It is +5", "5", "+5"),  # leading +
    ("Half of 3/2 is 3/4", "0.75", "3/4"),  # last number, a fraction
    ("<answer>19</answer> since 10 + 9 = 19, not 20", 19, "19"),  # reasoning-gym's tags
    ("#### Step 1\n2 + 3 = 5\n#### Step 2\nSo the answer is 5.", 5, "5"),  # `####` headings are not the marker
    ("Natalia sold 48 / 2 = 24 clips in May.\n#### 72", "Natalia sold 48/2 = 24 in May, 48 + 24 = 72.\n#### 72", "72"),
])
def test_final_number_accepts_the_right_number_however_it_is_written(completion, reference, extracted):
    verdict = build_verifier("final_number")({"answer": reference}, completion)
    assert verdict == Verdict(True, 1.0, extracted, verdict.reason), verdict


@pytest.mark.parametrize(("completion", "reference"), [
    ("She has 6 * 7 = 42 apples.\n#### 41", 42),
    (r"\boxed{13}. Check: 3 * 4 = 12", 12),  # the boxed answer counts, not the last number
    ("The answer is 4", -4),  # the sign matters
    ("1,234", 1234.5),
    ("0.333", "1/3"),  # exact values, no tolerance
    ("four", 4),  # words are not numbers
])
def test_final_number_rejects_a_wrong_number(completion, reference):
    verdict = build_verifier("final_number")({"answer": reference}, completion)
    assert not verdict.accepted and verdict.score == 0.0
    assert build_verifier("final_number")({"answer": 4}, "no digits here").extracted is None


def test_final_answer_marks_are_taken_in_order_then_the_last_number():
    marks = ["<answer>1</answer>", "#### 2", r"\boxed{3}", "The answer is 4."]
    text = f"{marks[2]} {marks[3]} {marks[0]} and then 5\n{marks[1]}"
    for mark, expected in zip(marks, "1234", strict=True):
        assert final_number(text)[0] == expected
        text = text.replace(mark, "")
    assert final_number(text)[0] == "5"
    # a marked span without a number falls through to the next mark; within a span, the first number counts
    assert final_number("The answer is below.\n\\boxed{x}\nso 6 then 7") == ("7", Fraction(7))
    assert final_number("The answer is 6 apples, from 2 bags of 3") == ("6", Fraction(6))


def test_boxed_keeps_nested_braces_and_refuses_an_unclosed_box():
    assert boxed(r"we get \boxed{\frac{1}{\sqrt{4}}} and \boxed{\text{{x}}} done") == r"\text{{x}}"
    assert boxed(r"\boxed{\frac{1}{\sqrt{4}}}.") == r"\frac{1}{\sqrt{4}}"
    assert boxed(r"\boxed{1} then \boxed{\frac{2}{3}") is None and boxed("no box") is None


def test_numbers_have_exact_values():
    assert [v for _, v in numbers("-1,234.50, 3 / 4, \\dfrac{1}{2}, −4, 50%, 7/0, 1,000,000")] == [
        Fraction(-2469, 2), Fraction(3, 4), Fraction(1, 2), -4, 50, 1_000_000]


def test_the_reference_field_is_configurable():
    verify = build_verifier({"kind": "final_number", "answer_field": "target"})
    assert verify({"target": "72"}, "#### 72").accepted


# ------------------------------------------------------------------------------------------------- exact, regex


@pytest.mark.parametrize(("spec", "completion", "accepted"), [
    ("exact", "  Paris. ", True),
    ("exact", "**PARIS**", True),
    ("exact", "Paris is the answer", False),
    ({"kind": "exact", "extract": "final"}, "Let me think.\nThe answer is Paris.", True),
    ({"kind": "exact", "extract": "final"}, "The answer is Lyon.", False),
    ({"kind": "exact", "extract": "final"}, "Paris", False),  # no marked answer
    ({"kind": "exact", "extract": "first_line"}, "paris\nbecause it is the capital", True),
])
def test_exact_match_after_normalisation(spec, completion, accepted):
    assert build_verifier(spec)({"answer": "paris"}, completion).accepted is accepted
    assert build_verifier("exact")({"answer": "New York"}, "new   york").accepted


def test_regex_search_fullmatch_groups_and_per_record_patterns():
    tags = build_verifier({"kind": "regex", "pattern": r"<answer>(\d+)</answer>"})
    found = tags({}, "Thinking... <answer>42</answer>")
    assert (found.accepted, found.score, found.extracted) == (True, 1.0, "42")
    assert not tags({}, "<answer>forty-two</answer>").accepted
    search = build_verifier({"kind": "regex", "pattern": r"\d+"})
    full = build_verifier({"kind": "regex", "pattern": r"\d+", "match": "fullmatch"})
    assert search({}, "42 apples").accepted and not full({}, "42 apples").accepted
    assert full({}, " 42\n") == Verdict(True, 1.0, "42", full({}, "42").reason)  # fullmatch of the stripped text
    per_record = build_verifier("regex")
    assert per_record({"answer": r"(?i)^yes\b"}, "Yes, it is.").accepted
    assert not per_record({"answer": r"^yes\b"}, "Yes, it is.").accepted


# ----------------------------------------------------------------------------------------------- reasoning_gym


def test_reasoning_gym_uses_the_tasks_own_scorer():
    items = task_items(BUILTIN_TASKS["chain_sum"], 4, seed=0)  # eval TaskItems carry the reasoning-gym entry
    verify = build_verifier("reasoning_gym")  # the dataset comes from the entry's metadata
    for item in items:
        wrong = int(item.answer) + 1
        assert verify(item, f"Adding step by step.\n<answer>{item.answer}</answer>").accepted
        assert verify({"entry": item.entry}, f"The answer is {item.answer}.").accepted  # a plain record too
        verdict = verify(item, f"<answer>{wrong}</answer>")
        assert (verdict.accepted, verdict.score, verdict.extracted) == (False, 0.0, str(wrong))
        assert verify(item, item.answer).extracted is None  # no marked answer under `final`
        assert build_verifier({"kind": "reasoning_gym", "extract": "last_number"})(item, f"= {item.answer}").accepted


def test_reasoning_gym_threshold_sees_shaping_rewards():
    item = task_items(BUILTIN_TASKS["gsm_symbolic"], 1, seed=0)[0]
    wrong = f"#### {int(item.answer) + 7}"
    strict = build_verifier({"kind": "reasoning_gym", "dataset": "gsm_symbolic"})(item, wrong)
    assert not strict.accepted and strict.score == pytest.approx(0.01)  # gsm_symbolic pays 0.01 for any number
    assert build_verifier({"kind": "reasoning_gym", "threshold": 0.01})(item, wrong).accepted


# ------------------------------------------------------------------------------------------------------ python


def test_python_verifier_bool_float_and_verdict():
    says = build_verifier({"kind": "python", "function": "verifier_fixtures:says_the_answer"})
    assert says({"answer": 9}, "it is 9").accepted and not says({"answer": 9}, "it is 8").accepted
    half = {"kind": "python", "function": "verifier_fixtures:half_credit"}
    assert build_verifier(half)({"answer": 9}, "9") == Verdict(True, 1.0, None,
                                                               "verifier_fixtures:half_credit gave 1 (>= 1)")
    strict, lenient = build_verifier(half), build_verifier({**half, "threshold": 0.5})
    assert (strict({"answer": 9}, "8").accepted, strict({"answer": 9}, "8").score) == (False, 0.5)
    assert lenient({"answer": 9}, "8").accepted
    own = build_verifier({"kind": "python", "function": "verifier_fixtures:own_verdict"})
    assert own({}, "LOUD") == Verdict(True, 0.25, "loud", "shouting")


@pytest.mark.parametrize(("function", "message"), [
    ("no_such_module:check", r"verifier.function: cannot import 'no_such_module:check' \(No module named"),
    ("verifier_fixtures:missing", r"verifier.function: cannot import 'verifier_fixtures:missing'"),
    ("verifier_fixtures", r"verifier.function: 'verifier_fixtures' is not `module:callable`"),
    ("verifier_fixtures:NOT_A_FUNCTION", r"'verifier_fixtures:NOT_A_FUNCTION' is a int, not callable"),
])
def test_python_verifier_that_cannot_be_called_is_a_recipe_error(function, message):
    with pytest.raises(RecipeError, match=message) as exc_info:
        build_verifier({"kind": "python", "function": function})
    _one_line(exc_info)


@pytest.mark.parametrize(("function", "message"), [
    ("too_generous", r"verifier verifier_fixtures:too_generous scored record 'q3' 1.5, outside \[0, 1\]"),
    ("chatty", r"verifier_fixtures:chatty returned a str for record 'q3'; return a bool, a float in \[0, 1\] or a "),
])
def test_python_verifier_returning_nonsense_is_a_data_error(function, message):
    with pytest.raises(DataError, match=message) as exc_info:
        build_verifier({"kind": "python", "function": f"verifier_fixtures:{function}"})({"id": "q3"}, "x")
    _one_line(exc_info)


# ------------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(("spec", "record", "message"), [
    ("final_number", {"id": "gsm/7", "question": "How many?"},
     r"record 'gsm/7': no field `answer`, which the final_number verifier reads \(its `answer_field`\)"),
    ({"kind": "exact", "answer_field": "gold"}, {"answer": "x"},
     r"record \{'answer': 'x'\}: no field `gold`, which the exact verifier reads \(its `answer_field`\)"),
    ("reasoning_gym", {"id": 4, "question": "1 + 2 ="},
     r"record 4: no field `entry`, which the reasoning_gym verifier reads \(its `entry_field`\)"),
    ("reasoning_gym", {"id": 4, "entry": {"answer": "3"}},
     r"record 4: `entry` is not a reasoning-gym item with metadata.source_dataset; set the verifier's `dataset`"),
    ("final_number", {"id": "q1", "answer": "Paris"},
     r"record 'q1': `answer` is 'Paris', not a number; the final_number verifier needs one"),
    ("regex", {"id": "q2", "answer": "(unclosed"}, r"record 'q2': `answer`: '\(unclosed' is not a valid regex"),
])
def test_a_record_without_what_the_verifier_needs_is_a_data_error(spec, record, message):
    with pytest.raises(DataError, match=message) as exc_info:
        build_verifier(spec)(record, "#### 3")
    _one_line(exc_info)


@pytest.mark.parametrize(("spec", "message"), [
    ("final_numbr", r"verifier.kind: unknown verifier 'final_numbr'; did you mean 'final_number'\? built-in: "),
    ({"kind": "regex", "patern": "x"}, r"verifier.patern: Extra inputs are not permitted"),
    ({"kind": "regex", "pattern": "(x"}, r"verifier.pattern: '\(x' is not a valid regex"),
    ({"kind": "python"}, r"verifier.function: Field required"),
    ({"kind": "reasoning_gym", "threshold": 2}, r"verifier.threshold: Input should be less than or equal to 1"),
    ({"kind": "reasoning_gym", "dataset": "chain_sun"}, r"unknown dataset 'chain_sun'; did you mean 'chain_sum'\?"),
])
def test_a_bad_spec_is_a_recipe_error_before_any_record(spec, message):
    with pytest.raises(RecipeError, match=message) as exc_info:
        build_verifier(spec)
    _one_line(exc_info)


def test_every_kind_has_a_verifier_and_a_spec_is_its_own_shorthand():
    assert set(VERIFIERS) == set(SPECS) and set(KINDS) == {"reasoning_gym", "final_number", "exact", "regex", "python"}
    assert build_verifier(FinalNumberSpec(answer_field="y"))({"y": 2}, "2").accepted
