"""A student exported by `distill train` runs in lm-evaluation-harness 0.4.x, offline, on a local task: the CLI
and `lm_eval.simple_evaluate`, a multiple-choice (loglikelihood) task and a generate_until task over one JSONL.
docs/lm_eval.md shows the same task files and command."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import REPO, base_recipe, run_cli, write_recipe
from distill.builtin.corpus import tiny_stories

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

ITEMS = [
    {"context": "anna had two apples and got three more, so anna has", "choices": ["five apples", "zero apples"],
     "answer": 0},
    {"context": "yesterday ivo saw a dog in the", "choices": ["school", "apples", "kind"], "answer": 0},
    {"context": "the cow likes cleo because cleo is kind to the", "choices": ["seven", "cow"], "answer": 1},
    {"context": "emma had one apple and got one more, so emma has", "choices": ["two apples", "the forest"],
     "answer": 0},
    {"context": "anna and the small owl walk to the", "choices": ["apples", "market"], "answer": 1},
    {"context": "the hen likes ivo because ivo is", "choices": ["kind to the hen", "three apples"], "answer": 0},
]

# The two task files, as docs/lm_eval.md shows them; {data} is the JSONL's absolute path.
MC_TASK = """\
task: stories_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GEN_TASK = """\
task: stories_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 8
  do_sample: false
filter_list:
  - name: strip
    filter:
      - function: remove_whitespace
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""

MC_METRIC, GEN_METRIC = "acc,none", "exact_match,strip"


def _lm_eval_cli() -> Path:
    """The `lm_eval` console script next to this interpreter; fail (not skip): lm-eval is a dev dependency."""
    if importlib.util.find_spec("lm_eval") is None:
        pytest.fail("lm_eval is not importable: lm-eval==0.4.13 is a dev dependency, install it with "
                    "`pip install -c constraints.txt -e '.[dev]'` (or run `make test`)")
    cli = Path(sys.executable).with_name("lm_eval")
    if not cli.exists():
        pytest.fail(f"lm_eval is importable but its console script {cli} is missing; reinstall lm-eval")
    return cli


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A student exported by `distill train` (2 steps on the tiny teacher, as cheap as it gets)."""
    tmp = tmp_path_factory.mktemp("lm-eval-student")
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_stories(64, seed=3)))
    recipe = base_recipe(data, tmp / "run", training={"max_steps": 2, "save_every": 100})
    result = run_cli("train", str(write_recipe(tmp / "recipe.yaml", recipe)))
    assert result.returncode == 0, result.stderr
    return tmp / "run" / "student"


@pytest.fixture()
def tasks(tmp_path: Path) -> Path:
    """A folder for `--include_path` with the two task YAMLs, over a JSONL of len(ITEMS) items."""
    data = tmp_path / "stories.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "stories_mc.yaml").write_text(MC_TASK.format(data=data))
    (folder / "stories_gen.yaml").write_text(GEN_TASK.format(data=data))
    return folder


def _own_loglikelihoods(student: Path) -> list[list[float]]:
    """log p(" " + choice | context) per item and choice, summed over the continuation's tokens, straight from
    transformers: encode context + continuation with the tokenizer's defaults and split at the context's length, as
    lm-eval does for causal models."""
    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(student)
    scores = []
    for item in ITEMS:
        context_ids = tokenizer(item["context"]).input_ids
        row = []
        for choice in item["choices"]:
            ids = tokenizer(item["context"] + " " + choice).input_ids
            with torch.no_grad():
                logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            row.append(sum(logprobs[i - 1, ids[i]].item() for i in range(len(context_ids), len(ids))))
        scores.append(row)
    return scores


def _check_results(results: dict, student: Path) -> None:
    for task, metric in (("stories_mc", MC_METRIC), ("stories_gen", GEN_METRIC)):
        value = results["results"][task][metric]
        assert isinstance(value, float | int) and not isinstance(value, bool), (task, value)
        assert 0.0 <= value <= 1.0, (task, value)
        assert results["n-samples"][task] == {"original": len(ITEMS), "effective": len(ITEMS)}
    # it evaluated the exported student: same parameter count as its safetensors
    weights = load_file(student / "model.safetensors")
    assert results["config"]["model_num_parameters"] == sum(w.numel() for w in weights.values())
    assert results["max_length"] == AutoModelForCausalLM.from_pretrained(student).config.max_position_embeddings


def test_lm_eval_cli_runs_an_exported_student_on_a_local_task(tmp_path, student, tasks):
    cli = _lm_eval_cli()
    out = tmp_path / "results"
    env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")}
    result = subprocess.run(
        [str(cli), "--model", "hf", "--model_args", f"pretrained={student},dtype=float32",
         "--tasks", "stories_mc,stories_gen", "--include_path", str(tasks), "--device", "cpu",
         "--batch_size", "4", "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    found = list(out.glob("*/results_*.json"))
    assert len(found) == 1, f"expected one results JSON under {out}, found {found}\n{result.stderr[-2000:]}"
    results = json.loads(found[0].read_text())
    assert results["lm_eval_version"].startswith("0.4.")
    assert results["config"]["model_args"]["pretrained"] == str(student)
    _check_results(results, student)

    # every item was scored once per task, and the loglikelihoods are the student's own
    samples = {task: [json.loads(line) for line in next(found[0].parent.glob(f"samples_{task}_*.jsonl")).open()]
               for task in ("stories_mc", "stories_gen")}
    for task, rows in samples.items():
        assert sorted(row["doc_id"] for row in rows) == list(range(len(ITEMS))), task
    ours = _own_loglikelihoods(student)
    for row in samples["stories_mc"]:
        theirs = [float(ll) for ll, _greedy in row["filtered_resps"]]
        assert theirs == pytest.approx(ours[row["doc_id"]], abs=1e-3)
        assert row["acc"] == float(int(np.argmax(theirs)) == ITEMS[row["doc_id"]]["answer"])
    expected_acc = np.mean([int(np.argmax(s)) == item["answer"] for s, item in zip(ours, ITEMS, strict=True)])
    assert results["results"]["stories_mc"][MC_METRIC] == pytest.approx(expected_acc)
    for row in samples["stories_gen"]:
        assert isinstance(row["filtered_resps"][0], str)


def test_lm_eval_python_api_runs_an_exported_student(tmp_path, student, tasks, monkeypatch):
    _lm_eval_cli()
    import datasets.config
    import lm_eval
    from lm_eval.tasks import TaskManager

    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    # simple_evaluate seeds the global RNGs: give the rest of the session its state back
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            results = lm_eval.simple_evaluate(
                model="hf", model_args=f"pretrained={student},dtype=float32", tasks=["stories_mc", "stories_gen"],
                task_manager=TaskManager(include_path=str(tasks), include_defaults=False), device="cpu",
                batch_size=4, log_samples=False)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    assert results is not None
    _check_results(results, student)
    ours = _own_loglikelihoods(student)
    expected_acc = np.mean([int(np.argmax(s)) == item["answer"] for s, item in zip(ours, ITEMS, strict=True)])
    assert results["results"]["stories_mc"][MC_METRIC] == pytest.approx(expected_acc)
    assert not math.isnan(results["results"]["stories_gen"][GEN_METRIC])
