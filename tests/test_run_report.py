"""`distill report RUN` on a training run folder: its curves, the validation metrics logged during training (first,
best and last, the best equal to best/best.json), and its recipe; the same run's training shown beside an
eval.json written into it; and a demo's second recipe shown as the lines that differ from the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import base_recipe
from distill.recipe import validate_recipe
from distill.report.cells import Model
from distill.report.render import write_report
from distill.report.training_runs import run_view, training
from distill.results.metrics import read_metrics
from distill.results.schema import TrainingFacts
from distill.training.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A run of 6 steps with a tenth held out, evaluated every 2 steps, keeping the best by val_nll."""
    root = tmp_path_factory.mktemp("run-report")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i}: the cat sat on the mat and looked at bird {i}."}) + "\n"
                            for i in range(40)))
    recipe = base_recipe(data, root / "run", training={"max_steps": 6, "save_every": 6, "eval_every": 2,
                                                      "keep_best": "val_nll", "log_every": 1})
    recipe["teacher"]["model"] = str(tiny_teacher_dir)
    recipe["data"]["validation_fraction"] = 0.2
    train(validate_recipe(recipe))
    return root / "run"


def test_a_training_run_folder_reports_its_curves_validation_and_recipe(run: Path) -> None:
    html_path, md_path = write_report(run)
    assert html_path == run / "report.html"
    html, md = html_path.read_text(), md_path.read_text()
    best = json.loads((run / "best" / "best.json").read_text())
    evaluated = [r for r in read_metrics(run) if "val_nll" in r]
    row = next(m for v in run_view(run)["training"]["validation"] for m in v["metrics"] if m["metric"] == "val_nll")
    assert row == {"metric": "val_nll", "first": f"{evaluated[0]['val_nll']:.4f}", "best": f"{best['value']:.4f}",
                   "best_step": best["step"], "last": f"{evaluated[-1]['val_nll']:.4f}"}
    assert md.startswith("# Training run report")
    assert f"| run | 3 | val_nll | {row['first']} | {row['best']} | {best['step']} | {row['last']} |" in md
    assert f"best/ holds step {best['step']} (val_nll {best['value']:.4f})" in html
    assert 'alt="training curves"' in html and "keep_best: val_nll" in md  # the recipe, whole
    assert f"Best val_nll {row['best']} at step {best['step']} (3 evaluations)." in html


def test_an_eval_json_in_a_run_folder_is_shown_with_the_run_s_training(run: Path, tmp_path: Path) -> None:
    from distill.eval.cli_support import build_suite
    from distill.eval.suite import run_suite
    from distill.results.io import write_result

    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"text": f"the bird {i} sat on the cat and looked at the mat."}) + "\n"
                            for i in range(4)))
    suite = build_suite([str(run)], data=str(held), reference=None, baseline=None, text_field="text", slice_by=[],
                        max_docs=None, train_data=None, tasks=[], task_n=1, max_length=64, seed=0)
    suite.throughput_prompts = 0
    folder = tmp_path / "moved-copy"
    import shutil

    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("checkpoints", "report.*"))
    write_result(folder / "eval.json", run_suite(suite))
    html = write_report(folder)[0].read_text()
    assert 'id="results"' in html and 'id="training"' in html and "<h3>Validation</h3>" in html


def test_a_second_recipe_is_shown_as_its_difference_from_the_first(tmp_path: Path) -> None:
    first = "teacher:\n  model: t\ntraining:\n  lr: 0.001\n  max_steps: 6\nkd:\n  alpha: 0.5\n"
    second = first.replace("alpha: 0.5", "alpha: 0.0")
    models = [Model("kd", "KD student", "student", "#000"), Model("base", "Baseline", "baseline", "#111")]
    facts = {"kd": TrainingFacts(steps=6, recipe=first), "base": TrainingFacts(steps=6, recipe=second)}
    recipes = training(facts, models, tmp_path)["recipes"]
    assert recipes[0]["diff"] is None and recipes[0]["yaml"] == first.rstrip()
    changed = [(cls, line) for cls, line in recipes[1]["diff"] if cls in ("add", "del")]
    assert changed == [("del", "-  alpha: 0.5"), ("add", "+  alpha: 0.0")] and recipes[1]["against"] == "KD student"
    same = training({"kd": facts["kd"], "base": TrainingFacts(recipe=first)}, models, tmp_path)["recipes"]
    assert same[1]["diff"] == []
