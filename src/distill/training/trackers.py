"""Experiment trackers: the metrics of every logged step, sent through accelerate's tracker integration besides
`metrics.jsonl` (the record `distill report` reads).

TensorBoard stays our own writer (training/metrics.py): on resume it purges the steps after the checkpoint, so its
curves describe one trajectory like metrics.jsonl. Every other tracker (W&B, MLflow, Comet, Aim, ClearML, DVCLive,
SwanLab, Trackio) is accelerate's, configured as its library is (environment variables, its own config files).
A tracker's package is installed only by those who ask for it; a missing one is refused before any work, in one
line. A resumed run opens a new tracker run that continues at the resumed step.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from distill.errors import RecipeError
from distill.recipe import Recipe

OURS = "tensorboard"  # written by MetricsLog, not by accelerate
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml",
            "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
PIP_NAMES = {"mlflow": "mlflow (or mlflow-skinny)", "comet_ml": "comet-ml"}


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
