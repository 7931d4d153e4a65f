"""Experiment trackers: the metrics of every logged step, sent through accelerate's tracker integration besides
`metrics.jsonl` (the record `distill report` reads).

TensorBoard stays our own writer (training/metrics.py): on resume it purges the steps after the checkpoint, so its
curves describe one trajectory like metrics.jsonl. Every other tracker (W&B, MLflow, Comet, Aim, ClearML, DVCLive,
SwanLab, Trackio) is accelerate's, configured as its library is (environment variables, its own config files).
A tracker's package is installed only by those who ask for it; a missing one is refused before any work, in one
line. A resumed run opens a new tracker run that continues at the resumed step. A run that crashes still closes its
tracker runs (`ended_trackers`), marked failed where the tracker records how a run ended, instead of leaving them
RUNNING on the tracking server for ever.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from distill.errors import RecipeError
from distill.recipe import Recipe

OURS = "tensorboard"  # written by MetricsLog, not by accelerate
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml",
            "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
PIP_NAMES = {"mlflow": "mlflow (or mlflow-skinny)", "comet_ml": "comet-ml"}

log = logging.getLogger(__name__)


def accelerate_trackers(names: list[str]) -> list[str]:
    """The trackers accelerate runs, after checking each one's package is installed."""
    wanted = [n for n in names if n != OURS]
    for name in wanted:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise RecipeError(f"training.trackers: {name} needs the `{PACKAGES[name]}` package, which is not "
                              f"installed; `pip install {PIP_NAMES.get(name, name)}`, or remove {name} from "
                              "training.trackers")
    return wanted


PROJECT = "distill"  # the W&B project / MLflow experiment runs are filed under, so they can be compared


def start_trackers(accelerator: Accelerator, recipe: Recipe, run_dir: Path) -> None:
    """Open the trackers' runs in the project `distill`, each run named `training.run_name` (else the run folder's
    name), with the recipe as its configuration."""
    if accelerator.log_with:
        name = recipe.training.run_name or run_dir.resolve().name
        names = {"wandb": {"name": name}, "mlflow": {"run_name": name}}  # the others name runs themselves
        accelerator.init_trackers(PROJECT, config=flat_config(recipe.model_dump(mode="json")),
                                  init_kwargs={k: v for k, v in names.items() if k in recipe.training.trackers})


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The recipe as flat `section.field` → scalar pairs (lists and null as JSON text), what every tracker takes."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def log_to_trackers(accelerator: Accelerator, step: int, row: dict[str, Any]) -> None:
    """The numbers of one metrics row, at `step`."""
    if accelerator.log_with:
        accelerator.log({k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)},
                        step=step)


@contextmanager
def ended_trackers(accelerator: Accelerator) -> Iterator[None]:
    """Around a training run: the trackers' runs end whatever happens, so a crash never leaves one RUNNING.

    On success `accelerator.end_training()` closes them (and the process group). On an exception each tracker run is
    closed as failed where its tracker keeps a status — MLflow FAILED (KILLED for Ctrl-C), W&B a non-zero exit code;
    accelerate's `finish()` takes no status, so those two are ended here directly — and the others are finished
    plainly; then the original exception propagates. `sys.exit(0)` (or with no code) is a success, not a crash.
    The process group is left alone on a crash: other processes may still be blocked in a collective, and the
    launcher ends them."""
    try:
        yield
    except SystemExit as done:
        if done.code not in (None, 0):
            _end_failed(accelerator, killed=False)
        else:  # a clean exit (a preemption handler's sys.exit(0)): the runs end as finished
            accelerator.end_training()
        raise
    except BaseException as error:
        _end_failed(accelerator, killed=isinstance(error, KeyboardInterrupt))
        raise
    accelerator.end_training()


def _end_failed(accelerator: Accelerator, killed: bool) -> None:
    """Close every tracker run as failed; a tracker that cannot be closed is logged, never raised, so the error that
    ended training is the one reported."""
    if not accelerator.is_main_process:  # accelerate's trackers run on the main process only
        return
    for tracker in accelerator.trackers:
        try:
            if tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="KILLED" if killed else "FAILED")  # the run accelerate started is the active one
            elif tracker.name == "wandb":
                tracker.run.finish(exit_code=1)
            else:
                tracker.finish()
        except Exception as exc:  # the training error matters more than a tracker's
            log.warning("training.trackers: could not close the %s run after the crash: %s", tracker.name, exc)
