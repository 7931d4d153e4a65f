"""`distill generate` on the tiny teacher: the same rows at batch size 1 and 8; killed (-9) and run again, the same
rows as an uninterrupted run with every (prompt, sample) exactly once; a torn journal line is cut and redone; a
changed setup is refused; rejection sampling, duplicates and pass@k are counted right; and the output trains a
student as it is (sequence-level KD, with and without logit KD)."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from conftest import base_recipe, kill_9_when, run_cli, write_recipe
from distill.errors import DataError
from distill.generation.backends import LocalBackend
from distill.generation.run import run_generation
from distill.generation.selection import pass_at_k, select
from distill.recipe.generate import GenerateConfig
from distill.recipe.loading import load_generation_recipe

WORDS = ["Once upon a time", "The cat", "Tom saw a", "In the forest", "yesterday", "the old owl"]


def _prompts(path: Path, n: int, chat: bool = False) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            text = f"{WORDS[i % len(WORDS)]} {i}"
            f.write(json.dumps({"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}) + "\n")
    return path


def _recipe(tmp_path: Path, name: str = "gen.yaml", n_prompts: int = 6, **generate) -> Path:
    spec = {"prompts": str(_prompts(tmp_path / "prompts.jsonl", n_prompts, generate.pop("chat_records", False))),
            "chat": False, "n": 3, "sampling": {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 12, "seed": 4},
            "verifier": {"kind": "regex", "pattern": "owl|cat"}, "output": str(tmp_path / "out"), "batch_size": 8}
    spec.update(generate)
    return write_recipe(tmp_path / name, {"teacher": {"model": "builtin:tiny-teacher"}, "generate": spec})


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_rows_do_not_depend_on_batch_size(tmp_path):
    recipe = _recipe(tmp_path)
    outputs = {}
    for batch_size in (1, 8):
        out = tmp_path / f"out{batch_size}"
        loaded = load_generation_recipe(recipe, [f"generate.batch_size={batch_size}", f"generate.output={out}"])
        manifest = run_generation(loaded, progress=False)
        outputs[batch_size] = (out / "samples.jsonl").read_text()
        assert manifest["counts"]["samples"] == 18
    assert outputs[1] == outputs[8]
    rows = [json.loads(line) for line in outputs[1].splitlines()]
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(p, s) for p in range(6) for s in range(3)]
    assert len({r["completion"] for r in rows}) > 9  # sampled, not one text repeated


def test_kill_9_and_resume_gives_the_uninterrupted_rows(tmp_path):
    recipe = _recipe(tmp_path, n_prompts=40, batch_size=2, n=2, sampling={"temperature": 1.0, "max_new_tokens": 16,
                                                                           "seed": 1})
    whole = tmp_path / "whole"
    assert run_cli("generate", str(recipe), "--set", f"generate.output={whole}").returncode == 0
    journal = tmp_path / "out" / "journal.jsonl"
    kill_9_when(lambda: journal.exists() and len(_lines(journal)) >= 10, "generate", str(recipe))
    done_before = len(_lines(journal))
    assert 10 <= done_before < 80
    with open(journal, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"prompt": "torn')
    result = run_cli("generate", str(recipe))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in _lines(journal)]
    keys = [(r["prompt_id"], r["sample"]) for r in rows]
    assert sorted(keys) == [(p, s) for p in range(40) for s in range(2)]  # each exactly once: no gap, no duplicate
    for name in ("journal.jsonl", "samples.jsonl", "train.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (whole / name).read_bytes(), name


def test_finished_generation_run_again_generates_nothing(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path)
    first = run_generation(load_generation_recipe(recipe), progress=False)
    out = tmp_path / "out"
    before = {name: (out / name).read_bytes() for name in ("journal.jsonl", "samples.jsonl", "train.jsonl")}
    asked: list[int] = []
    original = LocalBackend.run
    monkeypatch.setattr(LocalBackend, "run", lambda self, work, on_done: (asked.append(len(work)),
                                                                         original(self, work, on_done)))
    again = run_generation(load_generation_recipe(recipe), progress=False)
    assert asked == [0] and again["counts"] == first["counts"]
    assert {name: (out / name).read_bytes() for name in before} == before
    # selection is redone from the journal: another cap re-selects without generating anything
    capped = run_generation(load_generation_recipe(recipe, ["generate.max_accepted=1"]), progress=False)
    assert asked == [0, 0] and capped["counts"]["kept"] <= first["counts"]["kept"]


def test_another_setup_in_the_same_folder_is_refused(tmp_path):
    recipe = _recipe(tmp_path)
    run_generation(load_generation_recipe(recipe), progress=False)
    with pytest.raises(DataError, match=r"generate\.sampling\.seed"):
        run_generation(load_generation_recipe(recipe, ["generate.sampling.seed=5"]), progress=False)
    # another tokenizer renders the prompts differently: refused too (here: another chat template)
    from transformers import AutoTokenizer

    from distill.builtin.registry import materialize

    other = AutoTokenizer.from_pretrained(materialize("builtin:tiny-teacher", "model"))
    other.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    other.save_pretrained(tmp_path / "other-tokenizer")
    chat = load_generation_recipe(recipe, ["generate.chat=true"])
    run_generation(chat, overwrite=True, progress=False)
    with pytest.raises(DataError, match="rendering"):
        run_generation(load_generation_recipe(recipe, ["generate.chat=true", f"tokenizer={tmp_path}/other-tokenizer"]),
                       progress=False)
    run_generation(load_generation_recipe(recipe, ["generate.sampling.seed=5"]), overwrite=True, progress=False)


def test_overwrite_deletes_only_a_generations_own_files(tmp_path):
    recipe = _recipe(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt"):
        run_generation(load_generation_recipe(recipe), overwrite=True, progress=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_rejection_sampling_duplicates_and_pass_at_k():
    def row(p, s, ok, text):
        return {"prompt_id": p, "sample": s, "accepted": ok, "completion": text}

    rows = [row(0, 0, True, "the answer is 4"), row(0, 1, True, "The answer is  4"), row(0, 2, True, "four it is"),
            row(0, 3, True, "so 4"), row(1, 0, False, "5"), row(1, 1, True, "4"), row(1, 2, False, "6"),
            row(1, 3, False, "7"), row(2, 0, False, "x"), row(2, 1, False, "y"), row(2, 2, False, "z"),
            row(2, 3, False, "w")]
    config = GenerateConfig(prompts="p.jsonl", n=4, max_accepted=2, output="o")
    kept, counts = select(rows, config)
    assert [(r["prompt_id"], r["sample"]) for r in kept] == [(0, 0), (0, 2), (1, 0 + 1)]
    assert counts == {"samples": 12, "accepted": 5, "rejected": 7, "exact_duplicates": 1, "near_duplicates": 0,
                      "over_max_accepted": 1, "kept": 3}
    assert rows[1]["dropped"] == "exact_duplicate" and rows[3]["dropped"] == "over_max_accepted"
    # the unbiased estimator against brute force: the share of k-subsets of the n samples holding an accepted one
    for correct in ([4, 1, 0], [2, 3, 0], [1, 1, 1]):
        for k in (1, 2, 3, 4):
            brute = sum(any(i < c for i in subset) for c in correct for subset in combinations(range(4), k))
            assert pass_at_k(correct, 4, k) == pytest.approx(brute / (len(correct) * len(list(combinations(range(4),
                                                                                                           k)))))


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_generated_chat_rows_train_a_student(tmp_path, alpha):
    recipe = _recipe(tmp_path, chat_records=True, verifier=None, n=2, chat=True)
    manifest = run_generation(load_generation_recipe(recipe), progress=False)
    train = tmp_path / "out" / "train.jsonl"
    first = json.loads(_lines(train)[0])
    assert first["messages"][-1]["role"] == "assistant" and first["verdict"] is None
    assert manifest["counts"]["kept"] == len(_lines(train))
    trainer = base_recipe(train, tmp_path / "run", objective={"kind": "seqkd", "alpha": alpha, "temperature": 1.0})
    trainer["data"].update(format="auto", max_length=48)
    result = run_cli("train", str(write_recipe(tmp_path / "train.yaml", trainer)))
    assert result.returncode == 0, result.stderr
    metrics = [json.loads(line) for line in _lines(tmp_path / "run" / "metrics.jsonl") if '"step"' in line]
    assert metrics and all(m["loss"] == m["loss"] for m in metrics)


def test_seqkd_refuses_text_records_in_check_and_train(tmp_path, text_data):
    spec = base_recipe(text_data, tmp_path / "run", objective={"kind": "seqkd"})
    recipe = write_recipe(tmp_path / "train.yaml", spec)
    for command in ("check", "train"):
        result = run_cli(command, str(recipe))
        assert result.returncode != 0, command
        assert "objective.kind: seqkd learns teacher-written completions" in result.stdout + result.stderr, command


def test_generate_recipe_errors_name_the_field(tmp_path):
    recipe = _recipe(tmp_path)
    raw = yaml.safe_load(recipe.read_text())
    raw["generate"]["verifier"] = {"kind": "final_numbr"}
    raw["generate"]["max_acepted"] = 2
    result = run_cli("generate", str(write_recipe(tmp_path / "bad.yaml", raw)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "generate.verifier: kind: unknown verifier 'final_numbr'; did you mean 'final_number'?" in result.stderr
    assert "generate.max_acepted: unknown key (did you mean `max_accepted`?)" in result.stderr
    raw = yaml.safe_load(recipe.read_text())
    raw["generate"]["max_accepted"] = 9
    result = run_cli("generate", str(write_recipe(tmp_path / "bad.yaml", raw)))
    assert result.returncode == 2 and "generate.max_accepted: is 9, more than the 3 samples per prompt" in result.stderr
