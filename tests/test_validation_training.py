"""Evaluation during training: val_nll (and agreement and KL with a live teacher) logged every eval_every steps on
a held-out share of the data, equal to a by-hand NLL of the kept best student; keep_best and early stopping, and
both resumed exactly after a checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import base_recipe
from distill.data.batch import Batch, shifted_targets
from distill.data.dataset import split_validation, tokenize_data, tokenize_validation
from distill.data.normalize import read_training_records
from distill.errors import RecipeError
from distill.recipe import DataConfig, load_recipe, validate_recipe
from distill.training.loop import train
from distill.training.metrics import read_metrics


def _recipe(text_data, out, **training):
    recipe = base_recipe(text_data, out, training={"max_steps": 6, "save_every": 2, **training})
    recipe["data"]["validation_fraction"] = 0.1
    return recipe


def _train(recipe, capsys) -> str:
    """Train in this process (a subprocess would add seconds of imports per run); returns what it printed."""
    capsys.readouterr()
    train(validate_recipe(recipe))
    return capsys.readouterr().out


def _by_hand_nll(student_dir, examples) -> float:
    model = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    pad = AutoTokenizer.from_pretrained(student_dir).pad_token_id
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:  # one sequence at a time: no padding to get wrong
            batch = Batch.of([example], pad)
            targets, valid = shifted_targets(batch.labels)
            logits = model(input_ids=batch.input_ids).logits[:, :-1]
            total += torch.nn.functional.cross_entropy(logits[valid], targets[valid], reduction="sum").item()
            count += int(valid.sum())
    return total / count


def test_validation_metrics_and_the_best_student(tmp_path, text_data, tiny_teacher_dir, tiny_tokenizer, capsys):
    recipe = _recipe(text_data, tmp_path / "run", eval_every=2, keep_best="val_nll", log_every=1)
    printed = _train(recipe, capsys)
    rows = read_metrics(tmp_path / "run")
    evaluated = [r for r in rows if "val_nll" in r]
    assert [r["step"] for r in evaluated] == [2, 4, 6] and all("val_nll" not in r for r in rows if r["step"] % 2)
    assert all(0 < r["val_agreement"] <= 1 and r["val_kl"] >= 0 for r in evaluated)
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    lowest = min(evaluated, key=lambda r: r["val_nll"])
    assert best == {"metric": "val_nll", "value": lowest["val_nll"], "step": lowest["step"]}
    assert "the best by val_nll" in printed
    # the logged value is the NLL of the kept student on exactly the held-out sequences, by hand
    cfg = validate_recipe(recipe).data
    held = tokenize_validation(cfg, tiny_tokenizer)
    assert _by_hand_nll(tmp_path / "run" / "best", held) == pytest.approx(best["value"], rel=1e-4)


def test_the_held_out_share_is_never_trained_on(tmp_path, text_data, tiny_tokenizer):
    cfg = DataConfig(train=str(text_data), validation_fraction=0.1, max_length=32, token_cache=False)
    train, held = split_validation(read_training_records(cfg), cfg)
    assert len(held) == 20 and len(train) == 180 and not {r["text"] for r in held} & {r["text"] for r in train}
    assert [r["text"] for r in split_validation(read_training_records(cfg), cfg)[1]] == [r["text"] for r in held]
    other = cfg.model_copy(update={"mixture_seed": 1})
    assert [r["text"] for r in split_validation(read_training_records(other), other)[1]] != [r["text"] for r in held]
    full = tokenize_data(cfg.model_copy(update={"validation_fraction": 0.0}), tiny_tokenizer)
    assert sum(len(e.input_ids) for e in tokenize_data(cfg, tiny_tokenizer).examples) < sum(
        len(e.input_ids) for e in full.examples)


def test_keep_best_and_early_stopping_resume_exactly(tmp_path, text_data, tiny_teacher_dir, capsys):
    """At lr 0.1 the agreement peaks at step 1 and never recovers in 6 steps, so a resume that lost the best so far
    would crown a later step; and patience 2 stops the run at step 3. The interruption: the run's copy without its
    last checkpoint and student, resumed from step 4 with the same recipe."""
    import shutil

    settings = {"eval_every": 1, "keep_best": "val_agreement", "lr": 0.1, "log_every": 1}
    recipe = _recipe(text_data, tmp_path / "straight", **settings)
    _train(recipe, capsys)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-00000006")
    shutil.rmtree(tmp_path / "resumed" / "student")
    (tmp_path / "resumed" / "best" / "best.json").unlink()  # must be written again, from the restored state
    capsys.readouterr()
    train(load_recipe(tmp_path / "resumed" / "recipe.yaml"), resume=True)  # a run-folder recipe: into that folder
    assert "resuming from" in capsys.readouterr().out
    straight = json.loads((tmp_path / "straight" / "best" / "best.json").read_text())
    assert straight["step"] < 4, "the setting no longer makes an early best; the resume check would not bite"
    assert not (tmp_path / "resumed" / "best" / "best.json").exists()  # no new best after step 4: not rewritten
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert state["validation"] == {"metric": "val_agreement", "best": straight["value"],
                                   "best_step": straight["step"], "since_best": 6 - straight["step"]}
    val = [(r["step"], r["val_agreement"]) for r in read_metrics(tmp_path / "resumed")]
    assert val == [(r["step"], r["val_agreement"]) for r in read_metrics(tmp_path / "straight")]

    stopping = _recipe(text_data, tmp_path / "stopped", **settings, early_stopping_patience=2)
    printed = _train(stopping, capsys)
    assert "early stopping at step 3: val_agreement has not improved for 2 evaluations" in printed
    assert read_metrics(tmp_path / "stopped")[-1]["step"] == 3
    assert (tmp_path / "stopped" / "checkpoints" / "step-00000003").is_dir()
    assert (tmp_path / "stopped" / "student").is_dir() and not math.isnan(straight["value"])


def test_evaluation_settings_need_what_they_measure(text_data, tmp_path):
    no_data = base_recipe(text_data, tmp_path / "r", training={"eval_every": 5})
    with pytest.raises(RecipeError, match=r"training\.eval_every: needs validation data"):
        validate_recipe(no_data)
    both = base_recipe(text_data, tmp_path / "r")
    both["data"].update(validation=str(text_data), validation_fraction=0.1)
    with pytest.raises(RecipeError, match=r"either data\.validation"):
        validate_recipe(both)
    with pytest.raises(RecipeError, match=r"early_stopping_patience: needs training\.keep_best"):
        validate_recipe(_recipe(text_data, tmp_path / "r", early_stopping_patience=2))


def test_a_validation_file_is_read_like_train(tmp_path, tiny_tokenizer):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl.gz"
    import gzip

    train.write_text("".join(json.dumps({"q": f"{i}+1=", "a": f"{i + 1}"}) + "\n" for i in range(20)))
    val.write_bytes(gzip.compress("".join(json.dumps({"q": f"{i}+2=", "a": f"{i + 2}"}) + "\n"
                                          for i in range(5)).encode()))
    cfg = DataConfig(train=str(train), validation=str(val), columns={"prompt": "q", "completion": "a"},
                     max_length=16, token_cache=False)
    held = tokenize_validation(cfg, tiny_tokenizer)
    assert len(held) == 5 and all(e.n_targets > 0 for e in held)
    assert tokenize_validation(cfg.model_copy(update={"validation": None}), tiny_tokenizer) is None
