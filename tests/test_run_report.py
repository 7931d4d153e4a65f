"""`distill report RUN` on a training run folder: its curves, the validation metrics logged during training (first,
best and last, the best equal to best/best.json), and its recipe; the headline's best is the metric best/ is kept
by; the same run's training shown beside an eval.json or audit.json written into it; a run that has logged no step
yet says so and still shows its result files; and a demo's second recipe shown as the lines that differ from the
first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import base_recipe
from distill.recipe import validate_recipe
from distill.report.cells import Model, human_count
from distill.report.render import write_report
from distill.report.training_runs import run_view, training
from distill.results.audit import write_audit
from distill.results.io import load_result
from distill.results.layout import BEST, BEST_JSON, MARKER, METRICS, RECIPE
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


def validation_line(folder: Path, label: str) -> str:
    """The report.md line of `folder`'s val_nll, computed from its metrics.jsonl: first, best (the earliest of equal
    values), its step, last."""
    evaluated = [(r["step"], r["val_nll"]) for r in read_metrics(folder) if "val_nll" in r]
    best_step, best = min(evaluated, key=lambda sv: sv[1])
    return (f"| {label} | {len(evaluated)} | val_nll | {evaluated[0][1]:.4f} | {best:.4f} | {best_step} | "
            f"{evaluated[-1][1]:.4f} |")


def copy_of(run: Path, folder: Path) -> Path:
    import shutil

    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("checkpoints", "report.*"))
    return folder


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
    folder = copy_of(run, tmp_path / "run")  # the name `distill eval RUN` gave its model
    write_result(folder / "eval.json", run_suite(suite))
    html_path, md_path = write_report(folder)
    html, md = html_path.read_text(), md_path.read_text()
    assert 'id="results"' in html and 'id="training"' in html and "<h3>Validation</h3>" in html
    models = load_result(folder / "eval.json").models
    results = html[html.index('id="results"'):html.index('id="training"')]
    assert models and all(f"</span>{m.label or name}</th>" in results for name, m in models.items())
    assert set(models) == {"teacher", "run"}  # the run's teacher is evaluated as the reference
    tokens = human_count(read_metrics(folder)[-1]["tokens_seen"])
    assert f"| run | 6 | {tokens} |" in md  # the run's own steps and tokens, under the evaluated model's name
    assert validation_line(folder, "run") in md
    best = json.loads((folder / BEST / BEST_JSON).read_text())
    assert f"run: best/ holds step {best['step']} (val_nll {best['value']:.4f})." in html


def test_an_audit_json_in_a_run_folder_is_shown_with_the_run_s_training(run: Path, tmp_path: Path) -> None:
    from test_audit import sample_result

    folder = copy_of(run, tmp_path / "audited")
    write_audit(folder / "audit.json", sample_result())
    html, md = (p.read_text() for p in write_report(folder))
    assert 'id="audit"' in html and "## Audit: suspect-folder" in md
    assert 'id="training"' in html and validation_line(folder, "audited") in md
    assert "keep_best: val_nll" in md  # the run's recipe


def fake_run(folder: Path, evaluations: list[dict[str, float]], keep_best: str | None = None,
             best_json: bool = True) -> Path:
    """A run folder as `distill train` leaves it, written by hand: a step logged per evaluation (steps 2, 4, …), the
    recipe naming `keep_best`, and best/best.json as training's BestTracker would have written it."""
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    (folder / RECIPE).write_text(f"training:\n  max_steps: {2 * len(evaluations)}\n"
                                 + (f"  keep_best: {keep_best}\n" if keep_best else ""))
    rows = [{"step": 2 * i + 2, "loss": 3.0 - i / 10, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0,
             "tokens_seen": 64 * (i + 1), "targets": 60, **values} for i, values in enumerate(evaluations)]
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if keep_best and best_json:
        sign = -1 if keep_best == "val_agreement" else 1
        step, value = None, None
        for r in rows:  # BestTracker: a new best only when strictly better
            if value is None or sign * r[keep_best] < sign * value:
                step, value = r["step"], r[keep_best]
        (folder / BEST).mkdir()
        (folder / BEST / BEST_JSON).write_text(json.dumps({"metric": keep_best, "value": value, "step": step}))
    return folder


EVALUATIONS = [{"val_nll": 2.5, "val_agreement": 0.30, "val_kl": 0.9},
               {"val_nll": 2.4, "val_agreement": 0.40, "val_kl": 0.8},
               {"val_nll": 2.2, "val_agreement": 0.40, "val_kl": 0.7},  # agreement tied with step 4's
               {"val_nll": 2.1, "val_agreement": 0.35, "val_kl": 0.6}]


@pytest.mark.parametrize("best_json", [True, False], ids=["best.json", "recipe only"])
def test_the_headline_names_the_best_of_the_metric_best_is_kept_by(tmp_path: Path, best_json: bool) -> None:
    folder = fake_run(tmp_path / "run", EVALUATIONS, keep_best="val_agreement", best_json=best_json)
    md = write_report(folder)[1].read_text()
    assert "Best val_agreement 0.4000 at step 4 (4 evaluations)." in md  # higher is better; a tie: the earliest
    assert "Best val_nll" not in md
    if best_json:
        assert "run: best/ holds step 4 (val_agreement 0.4000)." in md


def test_without_keep_best_the_headline_names_the_first_validation_metric(tmp_path: Path) -> None:
    evaluations = [{"val_nll": 2.5}, {"val_nll": 2.1}, {"val_nll": 2.1}, {"val_nll": 2.3}]
    md = write_report(fake_run(tmp_path / "run", evaluations))[1].read_text()
    assert "Best val_nll 2.1000 at step 4 (4 evaluations)." in md  # a tie: the earliest step


@pytest.mark.parametrize("metrics", ["", '{"step": 1, "lo\n'], ids=["empty", "a line cut off"])
def test_a_run_that_has_logged_no_step_says_so_and_still_shows_its_result_files(tmp_path: Path, metrics: str,
                                                                                 ) -> None:
    from test_audit import sample_result

    folder = fake_run(tmp_path / "fresh", [], keep_best="val_nll")
    (folder / METRICS).write_text(metrics)
    note = "The training run fresh has logged no steps yet (metrics.jsonl holds none), so there is no training section."
    html, md = (p.read_text() for p in write_report(folder))
    assert note in md and note in html and "## Training" not in md and 'id="training"' not in html
    write_audit(folder / "audit.json", sample_result())
    html, md = (p.read_text() for p in write_report(folder))
    assert "# Audit report" in md and 'id="audit"' in html and note in md and "## Training" not in md
    (folder / "eval.json").write_text(json.dumps({"schema_version": 1, "kind": "distill.eval",
                                                  "models": {"fresh": {"path": "x", "role": "student"}}}))
    html, md = (p.read_text() for p in write_report(folder))
    assert "## Models" in md and "| fresh | student |" in md and 'id="audit"' in html and note in md
    assert "## Training" not in md


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
