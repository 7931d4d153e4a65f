"""The demo's `summary.json` (a `DemoSummary`): the evaluation result plus, per training run, the facts of its
metrics.jsonl and its recipe, the demo's options and the wall time of each stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.demo.plan import DemoOptions
from distill.errors import DataError
from distill.recipe import Recipe, dump_recipe
from distill.results.layout import METRICS
from distill.results.metrics import read_metrics
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
    """Steps, tokens and training wall time of a finished run, from its metrics.jsonl (one line per step), so the
    figure stays right for a run that was killed and resumed."""
    run_dir = Path(recipe.training.output_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise DataError(f"{run_dir / METRICS} is empty; train the run first")
    seen = [0] + [r["tokens_seen"] for r in rows]
    wall = sum((seen[i + 1] - seen[i]) / r["tokens_per_s"] for i, r in enumerate(rows) if r["tokens_per_s"] > 0)
    return {"run_dir": run_dir.name, "steps": rows[-1]["step"], "tokens": rows[-1]["tokens_seen"],
            "wall_s": round(wall, 1), "final_loss": rows[-1]["loss"], "recipe": dump_recipe(recipe)}
