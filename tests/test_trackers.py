"""Experiment trackers through accelerate: MLflow written offline to a local folder gets the same metrics as
metrics.jsonl and the recipe as parameters; a run that crashes ends its MLflow run as FAILED, not RUNNING for ever;
TensorBoard can be switched off; a tracker whose package is missing is refused in one line before any work."""

from __future__ import annotations

import json

import pytest

from conftest import base_recipe
from distill.recipe import validate_recipe
from distill.training.loop import train
from distill.training.metrics import read_metrics
from distill.training.trackers import flat_config


def test_mlflow_offline_gets_every_logged_step(tmp_path, text_data, tiny_teacher_dir, monkeypatch):
    import mlflow  # a dev dependency (mlflow-skinny)

    store = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the local folder store behind this
    recipe = base_recipe(text_data, tmp_path / "run", training={"trackers": ["mlflow"], "run_name": "kd-test"})
    train(validate_recipe(recipe))
    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("distill").experiment_id])
    assert run.info.run_name == "kd-test"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    assert history == [(m["step"], pytest.approx(m["loss"])) for m in read_metrics(tmp_path / "run")]
    assert run.data.params["training.lr"] == "0.001" and run.data.params["teacher.model"] == "builtin:tiny-teacher"
    assert not (tmp_path / "run" / "tensorboard").exists()  # not asked for


def test_a_crashed_training_ends_its_mlflow_run_as_failed(tmp_path, text_data, tiny_teacher_dir, monkeypatch):
    import mlflow

    from distill.training import loop

    store = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    real = loop.log_to_trackers

    def crash_at_step_2(accelerator, step, row):
        real(accelerator, step, row)
        if step == 2:
            raise RuntimeError("boom at step 2")

    monkeypatch.setattr(loop, "log_to_trackers", crash_at_step_2)
    recipe = base_recipe(text_data, tmp_path / "run", training={"trackers": ["mlflow"], "run_name": "kd-crash"})
    with pytest.raises(RuntimeError, match="boom at step 2"):  # the original error, not one from closing the tracker
        train(validate_recipe(recipe))
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("distill").experiment_id])
    assert run.info.run_name == "kd-crash" and run.info.status == "FAILED" and run.info.end_time is not None
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]


def test_a_missing_tracker_package_is_refused_in_one_line(tmp_path, text_data, monkeypatch):
    import importlib.util

    from distill.errors import RecipeError
    from distill.training.trackers import accelerate_trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RecipeError, match=r"training\.trackers: wandb needs the `wandb` package.*pip install wandb"):
        accelerate_trackers(["tensorboard", "wandb"])
    assert accelerate_trackers(["tensorboard"]) == []


def test_flat_config_is_what_trackers_take():
    flat = flat_config({"seed": 0, "data": {"train": "x.jsonl", "columns": {}, "mixture": None},
                        "student": {"from_teacher": {"layers": [0, 3]}}})
    assert flat == {"seed": 0, "data.train": "x.jsonl", "data.mixture": "null", "student.from_teacher.layers": "[0, 3]"}
    assert all(isinstance(v, int | float | str) for v in flat.values()) and json.loads(flat["data.mixture"]) is None


@pytest.mark.parametrize(("code", "clean"), [(0, True), (None, True), (3, False)])
def test_a_clean_sys_exit_ends_the_runs_as_finished_and_an_error_code_as_failed(monkeypatch, code, clean):
    from types import SimpleNamespace

    from distill.training import trackers

    calls = []
    accelerator = SimpleNamespace(end_training=lambda: calls.append("finished"))
    monkeypatch.setattr(trackers, "_end_failed", lambda acc, killed: calls.append(f"failed killed={killed}"))
    with pytest.raises(SystemExit), trackers.ended_trackers(accelerator):
        raise SystemExit(code)
    assert calls == (["finished"] if clean else ["failed killed=False"])
