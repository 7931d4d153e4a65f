"""The training text the contamination check compares an eval set with (distill.eval.training_text): read as training
reads it — ShareGPT turns as chat, and without the records `data.validation_fraction` held out of training."""

from __future__ import annotations

import json
from pathlib import Path

from distill.data.dataset import split_validation
from distill.data.normalize import read_training_records
from distill.eval.contamination import contamination_result
from distill.eval.training_text import read_training_texts, recipe_training_texts
from distill.recipe import DataConfig

WORDS = ("anna", "saw", "a", "big", "dog", "near", "the", "old", "red", "barn", "and", "then", "she", "ran", "home",
         "to", "tell", "her", "mother", "about", "it", "one", "day", "sun")


def sentence(seed: int, n: int = 12) -> str:
    return " ".join(WORDS[(seed * 7 + 3 * i + i * i) % len(WORDS)] for i in range(n)) + f" number {seed}"


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_sharegpt_train_data_file_is_read_as_chat(tmp_path):
    """`--train-data` in ShareGPT shape ({from, value} turns): its words are found, so an eval set copied from it is
    reported as contaminated rather than "not computed"."""
    conversations = [{"conversations": [{"from": "human", "value": sentence(i, 6)},
                                        {"from": "gpt", "value": sentence(i + 50)}]} for i in range(4)]
    texts = read_training_texts(str(_jsonl(tmp_path / "train.jsonl", conversations)))
    assert texts.records == 4 and len(texts) == 4
    assert texts[0] == f"{sentence(0, 6)}\n{sentence(50)}"
    chats = [{"messages": [{"role": "user", "content": c["conversations"][0]["value"]},
                           {"role": "assistant", "content": c["conversations"][1]["value"]}]} for c in conversations]
    eval_texts = [f"{c['messages'][0]['content']}\n{c['messages'][1]['content']}" for c in chats]
    result, reason = contamination_result(texts, eval_texts, n=8)
    assert reason is None and result is not None and result["docs_with_overlap"] == 4


def test_records_held_out_by_validation_fraction_are_not_training_text(tmp_path):
    """The held-out records (training's own `split_validation`, seeded by data.mixture_seed) were never trained on:
    they are left out of the training text, so evaluating on exactly them finds no contamination, while every
    record trained on is still there."""
    records = [{"text": sentence(i)} for i in range(20)]
    data = DataConfig(train=str(_jsonl(tmp_path / "train.jsonl", records)), validation_fraction=0.25, mixture_seed=3)
    trained, held = split_validation(read_training_records(data), data)
    assert held is not None and len(held) == 5
    texts = recipe_training_texts(data)
    assert sorted(texts) == sorted(r["text"] for r in trained) and texts.records == 15
    result, reason = contamination_result(texts, [r["text"] for r in held], n=8)
    assert reason is None and result is not None and result["docs_with_overlap"] == 0
    assert sorted(recipe_training_texts(data.model_copy(update={"validation_fraction": 0.0}))) == \
        sorted(r["text"] for r in records)
