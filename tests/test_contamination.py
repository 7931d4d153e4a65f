"""N-gram contamination check: hand-computed overlaps, normalisation, edge cases, report fields."""

from __future__ import annotations

import pytest

from distill.errors import DataError
from distill.eval.contamination import Overlap, ngram_overlap, words

TRAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Distillation trains a small student to imitate a large teacher.",
]


def test_words_lowercases_and_splits_on_anything_but_letters_and_digits():
    assert words("Don't STOP: café_au-lait, 3.14!") == ["don", "t", "stop", "café", "au", "lait", "3", "14"]
    assert words("Ｆｕｌｌ width, Straße, cafe\u0301") == ["full", "width", "strasse", "café"]
    assert words("  ...  ") == []


def test_a_document_copied_from_training_overlaps_completely():
    overlap = ngram_overlap(TRAIN, [TRAIN[1]], n=3)
    assert overlap.per_doc == [1.0]
    assert overlap.eval_ngrams == overlap.overlapping_ngrams == 10 - 3 + 1


def test_a_document_sharing_one_trigram_out_of_k_has_fraction_one_over_k():
    # 7 words → k = 5 trigrams; only "brown fox jumps" occurs in training.
    overlap = ngram_overlap(TRAIN, ["a brown fox jumps high and far"], n=3)
    assert (overlap.eval_ngrams, overlap.overlapping_ngrams) == (5, 1)
    assert overlap.per_doc == [pytest.approx(1 / 5)]
    assert overlap.fraction == pytest.approx(1 / 5)


def test_punctuation_and_case_differences_still_match():
    overlap = ngram_overlap(TRAIN, ["THE QUICK—BROWN fox; jumps… over the LAZY dog!!"], n=4)
    assert overlap.per_doc == [1.0]


def test_ngrams_do_not_span_two_training_texts():
    overlap = ngram_overlap(["one two", "three four"], ["two three"], n=2)
    assert overlap.overlapping_ngrams == 0


def test_repeated_ngrams_in_an_eval_doc_count_each_occurrence():
    # "lazy dog" occurs in training and three times here; "dog lazy" does not: 3 of 5 bigrams.
    overlap = ngram_overlap(TRAIN, ["lazy dog lazy dog lazy dog"], n=2)
    assert (overlap.eval_ngrams, overlap.overlapping_ngrams) == (5, 3)


def test_documents_shorter_than_n_count_zero_and_add_no_ngrams():
    overlap = ngram_overlap(TRAIN, ["quick brown", TRAIN[0]], n=3)
    assert overlap.per_doc == [0.0, 1.0]
    assert overlap.eval_ngrams == 9 - 3 + 1
    assert overlap.fraction == 1.0


def test_empty_training_data_overlaps_nothing():
    overlap = ngram_overlap(iter([]), TRAIN, n=2)
    assert overlap.overlapping_ngrams == 0 and overlap.eval_ngrams > 0
    assert overlap.fraction == 0.0 and overlap.per_doc == [0.0, 0.0]


def test_training_texts_can_be_a_one_pass_generator():
    overlap = ngram_overlap((text for text in TRAIN), TRAIN, n=8)
    assert overlap.per_doc == [1.0, 1.0]


@pytest.mark.parametrize("n", [0, -1])
def test_n_below_one_is_rejected(n):
    with pytest.raises(DataError, match="at least 1"):
        ngram_overlap(TRAIN, TRAIN, n=n)


def test_a_single_string_instead_of_a_list_of_texts_is_rejected():
    with pytest.raises(TypeError, match="not one string"):
        ngram_overlap(TRAIN[0], TRAIN, n=2)


def test_document_counts_and_report_fields():
    overlap = Overlap(n=3, eval_ngrams=10, overlapping_ngrams=4, per_doc=[0.0, 0.25, 0.5, 0.75])
    assert overlap.docs_with_overlap == 3
    assert overlap.docs_over(0.5) == 1  # strictly over
    assert overlap.as_dict() == {
        "n": 3,
        "eval_ngrams": 10,
        "overlapping_ngrams": 4,
        "fraction": 0.4,
        "docs": 4,
        "docs_with_overlap": 3,
        "docs_over_half": 1,
        "max_doc_fraction": 0.75,
    }


def test_an_empty_eval_set_reports_zeros():
    assert ngram_overlap(TRAIN, [], n=3).as_dict() == {
        "n": 3, "eval_ngrams": 0, "overlapping_ngrams": 0, "fraction": 0.0, "docs": 0, "docs_with_overlap": 0,
        "docs_over_half": 0, "max_doc_fraction": 0.0,
    }


# ---- training data in every format the recipe trains on -----------------------------------------------------------

EVAL_TEXTS = [
    "Anna walked to the market with her small dog and bought seven red apples for the long winter.",
    "The old owl told Ivo that the forest would be quiet tonight because the wind had gone to sleep.",
    "Cleo counted three boats on the river and wrote their names in a little blue book before dinner.",
]


def _chat(text: str) -> dict:
    return {"messages": [{"role": "system", "content": "You tell short stories."},
                         {"role": "user", "content": "Tell me a story."},
                         {"role": "assistant", "content": [{"type": "text", "text": text}]}]}


TRAIN_FORMATS = {
    "messages": (lambda t: _chat(t), {"format": "messages"}),
    "prompt_completion": (lambda t: {"prompt": "Tell me a story.", "completion": t},
                          {"format": "prompt_completion"}),
}


def _write_jsonl(path, records):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _suite(tmp_path, models: list[str], train_data: str | None = None):
    from distill.eval.cli_support import build_suite

    data = _write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in EVAL_TEXTS])
    return build_suite(models, data=str(data), reference=None, baseline=None, text_field="text", slice_by=[],
                       max_docs=None, train_data=train_data, tasks=[], task_n=1, max_length=64, seed=0)


@pytest.mark.parametrize("kind", ["messages", "prompt_completion"])
def test_train_data_in_chat_and_prompt_completion_form_is_read(tmp_path, kind):
    make, _ = TRAIN_FORMATS[kind]
    train = _write_jsonl(tmp_path / "train.jsonl", [make(t) for t in EVAL_TEXTS])
    (tmp_path / "model").mkdir()
    suite = _suite(tmp_path, [f"m={tmp_path / 'model'}"], str(train))
    assert ngram_overlap(suite.train_texts, suite.sets[0].texts).fraction == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["messages", "prompt_completion"])
def test_a_run_folders_training_data_is_read_in_its_recipes_format(tmp_path, kind):
    import yaml

    make, data_section = TRAIN_FORMATS[kind]
    train = _write_jsonl(tmp_path / "train.jsonl", [make(t) for t in EVAL_TEXTS])
    run = tmp_path / "run"
    (run / "student").mkdir(parents=True)
    recipe = {"teacher": {"model": "builtin:tiny-teacher"}, "data": {"train": str(train), **data_section}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    suite = _suite(tmp_path, [str(run)])
    assert ngram_overlap(suite.train_texts, suite.sets[0].texts).fraction == pytest.approx(1.0)


def test_string_and_list_contents_of_every_turn_are_read():
    from distill.eval.training_text import record_text

    record = {"messages": [{"role": "user", "content": "first words here"},
                           {"role": "assistant", "content": [{"type": "text", "text": "second part"},
                                                             {"type": "image_url", "image_url": {"url": "x"}},
                                                             {"type": "text", "text": "third part"}]},
                           {"role": "tool", "content": None}]}
    assert record_text(record) == "first words here\nsecond part\nthird part"
    assert record_text({"prompt": "a b", "completion": "c d"}) == "a b\nc d"
    assert record_text({"body": "words", "text": "other"}, text_field="body") == "words"
    assert record_text({"id": 1}) is None and record_text({"messages": [{"role": "user"}]}) is None


def test_training_data_without_readable_text_is_not_computed_rather_than_zero(tmp_path):
    from distill.eval.contamination import contamination_result

    train = _write_jsonl(tmp_path / "train.jsonl", [{"id": i, "label": "ok"} for i in range(4)])
    (tmp_path / "model").mkdir()
    suite = _suite(tmp_path, [f"m={tmp_path / 'model'}"], str(train))
    block, reason = contamination_result(suite.train_texts, suite.sets[0].texts)
    assert block is None
    assert str(train) in reason and "4 records" in reason
