"""The demo's `summary.json`: the evaluation result plus training facts, options and stage times."""

from __future__ import annotations

from typing import Any

from distill.demo.pipeline import training_facts
from distill.demo.plan import DemoOptions
from distill.recipe import Recipe


def build_summary(options: DemoOptions, result: dict[str, Any], recipes: dict[str, Recipe],
                  walls: dict[str, float]) -> dict[str, Any]:
    summary = {key: value for key, value in result.items() if key != "inputs_key"}
    summary["kind"] = "distill.demo"
    summary["training"] = {name: training_facts(recipe) for name, recipe in recipes.items()}
    summary["options"] = options.as_json()
    summary["wall_s"] = walls
    return summary
