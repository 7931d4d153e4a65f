"""The demo pipeline end to end on the tiny teacher, `distill eval` and `distill report` on its runs.

The real demo (SmolLM2-135M-Instruct, ~15 minutes) is `make demo`; here the same code runs on a tiny teacher so the
shape of every result file and the stage reuse are checked in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, distill_cache: Path):
    from distill.builtin.corpus import tiny_stories
    from distill.demo.pipeline import run_demo
    from distill.demo.plan import DemoOptions

    root = tmp_path_factory.mktemp("demo")
    texts = tiny_stories(260, seed=5)
    (root / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:220]))
    (root / "held.jsonl").write_text("".join(json.dumps({"text": t, "source": "ab"[i % 2]}) + "\n"
                                             for i, t in enumerate(texts[220:])))
    options = DemoOptions(out=root / "run", teacher="builtin:tiny-teacher", layers=(0, 3),
                          train_data=str(root / "train.jsonl"), heldout=str(root / "held.jsonl"),
                          ood=str(root / "held.jsonl"), steps=4, batch_size=8, max_length=48, lr=3e-3, eval_docs=16,
                          ood_docs=8, tasks=("basic_arithmetic",), task_n=3, save_every=2)
    run_demo(options)
    return options


def test_demo_writes_summary_with_stable_fields_and_a_report(demo_run):
    out = demo_run.out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"teacher", "kd", "baseline", "init"}
    for info in summary["models"].values():
        assert info["params"] > 0 and info["disk_bytes"] > 0
        assert info["score_tokens_per_s"] > 0 and info["generate_tokens_per_s"] > 0
    nll = summary["paired"]["kd_minus_baseline"]["nll"]
    assert set(nll) == {"mean", "ci_low", "ci_high"} and nll["ci_low"] <= nll["ci_high"]
    held = summary["sets"]["heldout"]
    assert held["n_docs"] == 16 and set(held["slices"]) == {"source", "length"}
    assert set(held["slices"]["source"]) == {"a", "b"}
    assert held["contamination"]["n"] == 8 and 0 <= held["contamination"]["fraction"] <= 1
    for model in ("kd", "baseline", "init"):
        assert {"nll", "ppl", "top1_acc", "ece", "agreement", "kl_forward", "kl_reverse"} <= set(held["metrics"][model])
    assert "agreement" not in held["metrics"]["teacher"]
    assert set(held["gap_recovered"]) == {"kd", "init"}
    assert summary["tasks"]["basic_arithmetic"]["n"] == 3
    assert summary["training"]["kd"]["steps"] == 4 and summary["training"]["baseline"]["steps"] == 4
    assert "alpha: 1.0" in summary["training"]["baseline"]["recipe"]
    assert (out / "report.html").stat().st_size > 10_000 and (out / "report.md").exists()


def test_second_demo_run_reuses_every_finished_stage(demo_run, capsys):
    from distill.demo.pipeline import run_demo

    student = demo_run.out / "kd" / "student" / "model.safetensors"
    before = (student.stat().st_mtime_ns, (demo_run.out / "eval.json").stat().st_mtime_ns)
    run_demo(demo_run)
    after = (student.stat().st_mtime_ns, (demo_run.out / "eval.json").stat().st_mtime_ns)
    assert before == after
    err = capsys.readouterr().err
    assert "reusing" in err and "inputs unchanged" in err


def test_eval_cli_on_training_runs_uses_their_teacher_and_data(demo_run, tmp_path):
    out = tmp_path / "eval.json"
    result = run_cli("eval", str(demo_run.out / "kd"), str(demo_run.out / "baseline"), "--baseline", "baseline",
                     "--data", demo_run.heldout, "--slice-by", "source", "--max-docs", "6", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["reference"] == "teacher" and data["models"]["teacher"]["role"] == "teacher"
    block = data["sets"]["held"]
    assert block["n_docs"] == 6 and "kd_minus_baseline" in data["paired"]
    assert block["contamination"] is not None  # training data taken from the run's recipe


@pytest.mark.parametrize(("args", "message"), [
    (["--baseline", "nope"], "--baseline 'nope' is not one of the models"),
    (["--slice-by", "genre"], "has no field 'genre' to slice by"),
])
def test_eval_cli_rejects_bad_input_in_one_line(demo_run, args, message):
    result = run_cli("eval", str(demo_run.out / "kd"), "--data", demo_run.heldout, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_report_cli_rerenders_from_result_files(demo_run):
    (demo_run.out / "report.html").unlink()
    result = run_cli("report", str(demo_run.out))
    assert result.returncode == 0, result.stderr
    assert (demo_run.out / "report.html").exists()


def test_minutes_sizes_the_steps_from_a_speed_probe(distill_cache, tmp_path):
    from distill.demo.pipeline import sized_options
    from distill.errors import DataError

    def steps_for(minutes: float) -> int:
        options = sized_options(out=tmp_path, minutes=minutes, teacher="builtin:tiny-teacher", layers="0,3",
                                data="builtin:tiny-stories")
        return options.steps

    short, long = steps_for(4.2), steps_for(60)
    assert 1 <= short < long  # 4.2 minutes leaves ~12 s for training after the evaluation reserve
    with pytest.raises(DataError, match="give one of them"):
        sized_options(out=tmp_path, minutes=5, steps=10)
    with pytest.raises(DataError, match="--layers"):
        sized_options(out=tmp_path, layers="0,x")
