"""The demo's `summary.json` (a `DemoSummary`): the evaluation result plus, per training run, the facts of its
metrics.jsonl and its recipe, the demo's options and the wall time of each stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.demo.plan import DemoOptions
from distill.recipe import Recipe, dump_recipe
from distill.results.metrics import training_facts as run_training_facts
from distill.results.schema import DEMO_KIND, DemoSummary, EvalResult


def build_summary(options: DemoOptions, result: EvalResult, recipes: dict[str, Recipe],
                  walls: dict[str, float]) -> DemoSummary:
    summary = result.to_json()
    summary.pop("inputs_key", None)  # the eval stage's cache key, not a result
    summary["kind"] = DEMO_KIND
    summary["training"] = {name: training_facts(recipe) for name, recipe in recipes.items()}
    summary["options"] = options.as_json()
    summary["wall_s"] = walls
    return DemoSummary.for_writing(summary)


def training_facts(recipe: Recipe) -> dict[str, Any]:
    """The facts of a finished demo run (results/metrics.py), with its resolved recipe."""
    return run_training_facts(Path(recipe.training.output_dir), dump_recipe(recipe))
