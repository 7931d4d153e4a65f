"""Evaluation during training: val_nll (and agreement and KL with a live teacher) logged every eval_every steps on
a held-out share of the data, equal to a by-hand NLL of the kept best student; keep_best and early stopping, and
both resumed exactly after a checkpoint."""

from __future__ import annotations

import json

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


def _interrupted_copy(run, to, validation_state=None):
    """The run as a kill after its step-4 checkpoint leaves it (no step-6 checkpoint, no student, no best.json); with
    `validation_state`, that checkpoint's keep_best state replaced (and its checksum updated)."""
    import hashlib
    import shutil

    shutil.copytree(run, to)
    shutil.rmtree(to / "checkpoints" / "step-00000006")
    shutil.rmtree(to / "student")
    (to / "best" / "best.json").unlink()
    if validation_state is not None:
        ckpt = to / "checkpoints" / "step-00000004"
        state = json.loads((ckpt / "state.json").read_text())
        state["validation"] = validation_state
        (ckpt / "state.json").write_text(json.dumps(state))
        manifest = json.loads((ckpt / "manifest.json").read_text())
        manifest["files"]["state.json"] = hashlib.sha256((ckpt / "state.json").read_bytes()).hexdigest()
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
    return to


def test_keep_best_and_early_stopping_resume_exactly(tmp_path, text_data, tiny_teacher_dir, capsys):
    """A resume restores the best so far from the checkpoint: the step-4 checkpoint's state is replaced by an
    unbeatable best (agreement 2.0 at step 1, 3 evaluations ago), so the resumed run must keep it — never write
    best.json, count on to 5 evaluations since — where a resume that lost the state would crown step 5 or 6.
    The same state with patience 2 stops the resumed run at its first evaluation. Evaluations themselves resume
    exactly: the resumed run logs the uninterrupted run's values."""
    settings = {"eval_every": 1, "keep_best": "val_agreement", "log_every": 1}
    _train(_recipe(text_data, tmp_path / "straight", **settings), capsys)
    unbeatable = {"metric": "val_agreement", "best": 2.0, "best_step": 1, "since_best": 3}

    resumed = _interrupted_copy(tmp_path / "straight", tmp_path / "resumed", unbeatable)
    capsys.readouterr()
    train(load_recipe(resumed / "recipe.yaml"), resume=True)  # a run-folder recipe trains into that folder
    assert "resuming from" in capsys.readouterr().out
    assert not (resumed / "best" / "best.json").exists()
    state = json.loads((resumed / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert state["validation"] == {**unbeatable, "since_best": 5}
    val = [(r["step"], r["val_agreement"]) for r in read_metrics(resumed)]
    assert val == [(r["step"], r["val_agreement"]) for r in read_metrics(tmp_path / "straight")]

    stopping = _interrupted_copy(tmp_path / "straight", tmp_path / "stopped", unbeatable)
    printed = _resume(stopping, capsys, "training.early_stopping_patience=2")
    assert "early stopping at step 5: val_agreement has not improved for 4 evaluations" in printed
    assert read_metrics(stopping)[-1]["step"] == 5
    assert (stopping / "checkpoints" / "step-00000005").is_dir() and (stopping / "student").is_dir()


def _resume(run, capsys, *overrides) -> str:
    capsys.readouterr()
    train(load_recipe(run / "recipe.yaml", list(overrides)), resume=True)
    return capsys.readouterr().out


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


def test_held_out_examples_are_stored_so_a_start_does_not_read_the_source_again(tmp_path, tiny_tokenizer,
                                                                               monkeypatch):
    import distill.data.dataset as dataset

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"story {i}: the fox {i} ran past the barn."}) + "\n"
                            for i in range(30)))
    cfg = DataConfig(train=str(path), validation_fraction=0.2, max_length=32)
    reads = []
    real = dataset.read_training_records
    monkeypatch.setattr(dataset, "read_training_records", lambda c: reads.append(c) or real(c))
    first = list(tokenize_data(cfg, tiny_tokenizer).examples), list(tokenize_validation(cfg, tiny_tokenizer))
    assert len(reads) == 1  # the first build reads the source once for both parts
    again = list(tokenize_data(cfg, tiny_tokenizer).examples), list(tokenize_validation(cfg, tiny_tokenizer))
    assert len(reads) == 1 and again == first
    in_memory = cfg.model_copy(update={"token_cache": False})
    assert tokenize_validation(in_memory, tiny_tokenizer) == first[1]
    path.write_text(path.read_text().replace("fox 3", "cat 3"))  # new bytes: new stores, read again
    tokenize_validation(cfg, tiny_tokenizer)
    assert len(reads) == 3


def test_a_nan_evaluation_is_never_the_best():
    """A NaN compares false with everything: kept as the best, it would stay the best for good."""
    from distill.training.validation import BestTracker

    tracker = BestTracker("val_nll")
    assert not tracker.update(1, {"val_nll": float("nan")}) and tracker.best is None
    assert tracker.update(2, {"val_nll": 3.0}) and tracker.update(3, {"val_nll": 2.5})
    assert not tracker.update(4, {"val_nll": float("nan")}) and (tracker.best, tracker.best_step) == (2.5, 3)
    assert tracker.since_best == 1
