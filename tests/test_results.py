"""`distill.results`: the result files' schema, their one reader and writer, and the one place their names live.

A result of another schema version is refused in one line; a malformed field is a one-line DataError naming the
file and the field's path; writing a result and reading it back gives the same file; a metrics.jsonl row is checked
when it is written and when it is read, and keeps the loss terms the objective names.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.errors import DataError
from distill.results.io import load_result, write_result
from distill.results.layout import EVAL, METRICS, SUMMARY
from distill.results.metrics import read_metrics
from distill.results.schema import SCHEMA_VERSION, DemoSummary, EvalResult
from distill.training.metrics import MetricsLog
from test_report import build_summary

RESULTS = Path(__file__).resolve().parents[1] / "src" / "distill" / "results"


def _eval_result() -> dict:
    interval = {"mean": 3.5, "ci_low": 3.4, "ci_high": 3.6}
    return {"schema_version": SCHEMA_VERSION, "kind": "distill.eval",
            "models": {"kd": {"path": "runs/kd/student", "params": 1000, "disk_bytes": None, "role": "student",
                              "label": "kd"}},
            "primary": "held",
            "sets": {"held": {"n_docs": 2, "metrics": {"kd": {"nll": interval}},
                              "calibration": {"kd": {"ece": 0.1, "bins": [
                                  {"lo": 0.0, "hi": 0.5, "count": 3, "confidence": 0.2, "accuracy": 0.1},
                                  {"lo": 0.5, "hi": 1.0, "count": 0, "confidence": None, "accuracy": None}]}},
                              "contamination": None, "contamination_reason": "no training data given"}}}


def _error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_result(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_result_of_another_schema_version_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / EVAL
    path.write_text(json.dumps(_eval_result() | {"schema_version": SCHEMA_VERSION + 1}))
    message = _error(path)
    assert f"has schema_version {SCHEMA_VERSION + 1} but this distill reads version {SCHEMA_VERSION}" in message
    path.write_text(json.dumps({k: v for k, v in _eval_result().items() if k != "schema_version"}))
    assert "has schema_version None" in _error(path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["sets"]["held"]["calibration"]["kd"]["bins"][1].update(lo="low"),
     "sets.held.calibration.kd.bins[1].lo should be a number"),
    (lambda r: r["sets"]["held"]["metrics"]["kd"]["nll"].pop("mean"), "sets.held.metrics.kd.nll.mean is missing"),
    (lambda r: r["sets"]["held"]["metrics"]["kd"]["nll"].update(ci_low=None),
     "sets.held.metrics.kd.nll should have both bounds"),
    (lambda r: r["models"]["kd"].update(role="teacher's pet"), "models.kd.role should be 'teacher', 'student'"),
    (lambda r: r["sets"]["held"].update(contamination={"n": 8}),
     "sets.held.contamination should have fraction, or eval_ngrams and overlapping_ngrams"),
    (lambda r: r["sets"]["held"].update(n_docs=float("nan")), "sets.held.n_docs should be a"),
])
def test_a_malformed_eval_file_is_one_line_naming_the_field(tmp_path: Path, change, message: str) -> None:
    result = _eval_result()
    change(result)
    path = tmp_path / EVAL
    path.write_text(json.dumps(result))
    assert message in _error(path)


def test_writing_then_reading_a_result_gives_the_same_file(tmp_path: Path) -> None:
    original = json.loads((build_summary(tmp_path / "demo") / SUMMARY).read_text())
    summary = DemoSummary.for_writing(original)
    write_result(tmp_path / "out" / SUMMARY, summary)
    written = (tmp_path / "out" / SUMMARY).read_text()
    assert json.loads(written) == original  # every field kept, none added (fields in the schema's order)
    again = load_result(tmp_path / "out" / SUMMARY)
    assert isinstance(again, DemoSummary) and again == summary
    assert again.sets["heldout"].metrics["kd"]["nll"].mean == pytest.approx(3.71)
    write_result(tmp_path / "again" / SUMMARY, again)
    assert (tmp_path / "again" / SUMMARY).read_text() == written


def test_the_schema_version_is_written_though_a_writer_leaves_it_out() -> None:
    result = EvalResult.for_writing({k: v for k, v in _eval_result().items() if k != "schema_version"})
    assert next(iter(result.to_json().items())) == ("schema_version", SCHEMA_VERSION)


def test_a_writer_cannot_add_a_field_the_schema_does_not_name() -> None:
    result = _eval_result()
    result["sets"]["held"]["metrics_v2"] = {}
    with pytest.raises(ValidationError, match="does not name: metrics_v2"):
        EvalResult.for_writing(result)
    assert "metrics_v2" in EvalResult.model_validate(result).sets["held"].model_extra  # a reader keeps it


def test_task_truncation_fields_are_optional_and_round_trip(tmp_path: Path) -> None:
    """Files written before the budget was recorded load (the fields are null); new ones keep them."""
    result = _eval_result()
    result["tasks"] = {"sums": {"n": 2, "models": {"kd": {"accuracy": {"mean": 0.5, "ci_low": 0.0, "ci_high": 1.0},
                                                          "examples": [{"id": "0", "score": 1.0}]}}}}
    path = tmp_path / EVAL
    path.write_text(json.dumps(result))
    old = load_result(path).tasks["sums"]
    assert old.max_new_tokens is None and old.models["kd"].truncated is None
    assert old.models["kd"].examples[0].truncated is None
    task = result["tasks"]["sums"]
    task["max_new_tokens"] = 32
    task["models"]["kd"]["truncated"] = 0.5
    task["models"]["kd"]["examples"][0]["truncated"] = True
    write_result(tmp_path / "new" / EVAL, EvalResult.for_writing(result))
    new = load_result(tmp_path / "new" / EVAL).tasks["sums"]
    assert (new.max_new_tokens, new.models["kd"].truncated, new.models["kd"].examples[0].truncated) == (32, 0.5, True)


def _row(step: int, **extra: float) -> dict:
    return {"loss": 2.5 / step, "ce": 3.0, "kd": 2.0, **extra, "lr": 1e-3, "grad_norm": None, "tokens_per_s": 900.0,
            "tokens_seen": 512 * step, "targets": 500}


def test_metrics_rows_round_trip_in_order_with_the_objectives_own_terms(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, 0, tensorboard=False)
    log.log(1, _row(1, jsd=0.25))
    fp16 = {"loss_scale": 65536.0, "skipped": True}
    log.log(2, _row(2, jsd=0.125, teacher_mass=0.97) | fp16)
    log.close()
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert list(json.loads(lines[0])) == ["step", *_row(1, jsd=0.25)]  # the order the loop gave
    assert read_metrics(tmp_path) == [{"step": 1, **_row(1, jsd=0.25)},
                                      {"step": 2, **_row(2, jsd=0.125, teacher_mass=0.97), **fp16}]
    assert read_metrics(tmp_path)[1]["skipped"] is True
    with pytest.raises(ValueError, match="jsd should be a number"):
        MetricsLog(tmp_path, 2, tensorboard=False).log(3, _row(3, jsd="a lot"))


def test_a_malformed_metrics_row_is_one_line_naming_the_line_and_field(tmp_path: Path) -> None:
    good = json.dumps({"step": 1, **_row(1)})
    (tmp_path / METRICS).write_text(good + "\n" + '{"step": 2, "lo')  # a last line cut by a kill is skipped
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    for bad, field in (({"step": 2, **_row(2), "loss": "high"}, "loss should be a number"),
                       ({"step": 2, **_row(2), "kl_term": [1.0]}, "kl_term should be a number"),
                       ({k: v for k, v in _row(2).items()}, "step is missing")):
        (tmp_path / METRICS).write_text(good + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=re.escape(f"{tmp_path / METRICS}, line 2: {field}")) as info:
            read_metrics(tmp_path)
        assert "\n" not in str(info.value)


def test_the_report_refuses_a_malformed_metrics_row_of_a_run_it_shows(tmp_path: Path) -> None:
    from distill.report.render import write_report

    run = build_summary(tmp_path / "demo")
    path = run / "kd" / METRICS
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"tokens_seen": 6144', '"tokens_seen": "6k"')
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=re.escape(f"{path}, line 3: tokens_seen should be a whole number")):
        write_report(run)


def test_results_imports_nothing_of_distill_above_it() -> None:
    allowed = {"distill", "distill.errors", "distill.atomic"}
    for file in RESULTS.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                assert top != "distill" or name in allowed or name.startswith("distill.results"), (file.name, name)
                assert top in {"distill", "pydantic", "__future__"} or top in _stdlib(), (file.name, name)


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
