"""`distill demo`: shrink a pretrained teacher into a copied-layer student, with and without distillation, evaluate
all four models on held-out data, and write a report.

Stages and what makes each one skippable on a second run (every stage is resumable or atomic):
  teacher, data   built-in aliases, converted/built once into the cache (`distill models`)
  init            `init/` — the copied student before training (saved atomically)
  kd, baseline    training runs; a killed run resumes from its last checkpoint, a finished one whose recipe is
                  unchanged is kept; a changed recipe starts that run over
  eval            `eval.json`, kept while its inputs (options, both recipes) are unchanged
  report          `summary.json`, `report.html`, `report.md` — always rewritten (seconds)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from distill.demo.plan import DemoOptions, recipe_for
from distill.errors import DataError
from distill.recipe import Recipe, dump_recipe

console = Console(stderr=True)


def run_demo(options: DemoOptions) -> Path:
    """Run (or finish) the demo in `options.out`; returns the report path."""
    from distill.builtin.registry import resolve

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    with _stage("teacher", walls):
        teacher_path = resolve(options.teacher, "model")
    with _stage("data", walls):
        from distill.data.sources import read_records

        for source in (options.train_data, options.heldout, options.ood):
            if source:
                read_records(source, field=f"demo data {source}", limit=1)
    recipes = {which: recipe_for(options, which) for which in ("kd", "baseline")}
    with _stage("init", walls):
        init_dir = _copied_student(recipes["kd"], out / "init")
    for which, recipe in recipes.items():
        with _stage(f"train {which}", walls):
            _train(recipe)
    with _stage("eval", walls):
        from distill.demo.evaluation import evaluate_demo

        key = _inputs_key(options, recipes)
        eval_path = out / "eval.json"
        cached = json.loads(eval_path.read_text()) if eval_path.exists() else None
        if cached is None or cached.get("inputs_key") != key:
            models = {"teacher": teacher_path, "kd": out / "kd" / "student", "baseline": out / "baseline" / "student",
                      "init": init_dir}
            result = evaluate_demo(options, models, recipes)
            result["inputs_key"] = key
            from distill.atomic import write_json

            write_json(eval_path, result)
        else:
            console.print("[dim]eval: inputs unchanged, reusing eval.json[/dim]")
    with _stage("report", walls):
        from distill.atomic import write_json
        from distill.demo.summary import build_summary
        from distill.eval.summary_table import print_summary
        from distill.report.render import write_report

        summary = build_summary(options, json.loads(eval_path.read_text()), recipes, walls)
        write_json(out / "summary.json", summary)
        html, _ = write_report(out)
    print_summary(summary)
    console.print(f"\nreport: [bold]{html}[/bold]  (markdown: {out / 'report.md'}, data: {out / 'summary.json'})")
    return html


class _stage:
    """Print a stage's start and end, and record its wall time."""

    def __init__(self, name: str, walls: dict[str, float]):
        self.name, self.walls = name, walls

    def __enter__(self) -> None:
        console.rule(f"[bold]{self.name}")
        self.began = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.walls[self.name] = round(time.perf_counter() - self.began, 1)


def _copied_student(recipe: Recipe, folder: Path) -> Path:
    """The student as initialised, before any training: the 'untrained copy' row of the comparison."""
    marker = folder / "layers.json"
    layers = list(recipe.student.from_teacher.layers)
    if marker.exists() and json.loads(marker.read_text()) == {"teacher": recipe.teacher.model, "layers": layers}:
        console.print(f"[dim]init: reusing {folder}[/dim]")
        return folder
    from distill.models import build_student, load_teacher, load_tokenizer

    tokenizer = load_tokenizer("teacher.model", *recipe.tokenizer_options())
    student = build_student(recipe, tokenizer, load_teacher(recipe.teacher))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "layers.json").write_text(json.dumps({"teacher": recipe.teacher.model, "layers": layers}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _train(recipe: Recipe) -> None:
    from distill.training.loop import train

    run_dir = Path(recipe.training.output_dir)
    saved = run_dir / "recipe.yaml"
    same = saved.exists() and saved.read_text() == dump_recipe(recipe)
    if same and (run_dir / "student" / "config.json").exists():
        console.print(f"[dim]{run_dir.name}: finished with these settings, reusing {run_dir / 'student'}[/dim]")
        return
    if saved.exists() and not same:
        console.print(f"{run_dir.name}: settings changed since the last run; training it again")
        train(recipe, overwrite=True)
    else:
        train(recipe, resume=True)


def _inputs_key(options: DemoOptions, recipes: dict[str, Recipe]) -> str:
    payload = json.dumps({"options": options.as_json(), "recipes": {k: dump_recipe(r) for k, r in recipes.items()}},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def training_facts(recipe: Recipe) -> dict[str, Any]:
    """Steps, tokens and training wall time of a finished run, from its metrics.jsonl (one line per step), so the
    figure stays right for a run that was killed and resumed."""
    from distill.training.metrics import read_metrics

    run_dir = Path(recipe.training.output_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise DataError(f"{run_dir}/metrics.jsonl is empty; train the run first")
    seen = [0] + [r["tokens_seen"] for r in rows]
    wall = sum((seen[i + 1] - seen[i]) / r["tokens_per_s"] for i, r in enumerate(rows) if r["tokens_per_s"] > 0)
    return {"run_dir": run_dir.name, "steps": rows[-1]["step"], "tokens": rows[-1]["tokens_seen"],
            "wall_s": round(wall, 1), "final_loss": rows[-1]["loss"], "recipe": dump_recipe(recipe)}


EVAL_RESERVE_S = 240  # set-up, evaluation and report on the default sizes, measured on a 2-core CPU


def sized_options(*, out: Path, minutes: float | None = None, steps: int | None = None, teacher: str | None = None,
                  layers: str | None = None, data: str | None = None, heldout: str | None = None,
                  alpha: float | None = None, lr: float | None = None) -> DemoOptions:
    """Options from the command line; `--minutes` picks the steps that fit the budget, from a speed probe."""
    options = DemoOptions(out=out)
    if alpha is not None:
        if not 0.0 <= alpha < 1.0:
            raise DataError(f"--alpha must be in [0, 1) (1 would make the KD student a second baseline), got {alpha}")
        options.alpha = alpha
    if lr is not None:
        if lr <= 0:
            raise DataError(f"--lr must be positive, got {lr}")
        options.lr = lr
    if teacher:
        options.teacher = teacher
    if layers:
        try:
            options.layers = tuple(int(x) for x in layers.split(","))
        except ValueError:
            raise DataError(f"--layers: expected comma-separated layer indices like 0,6,12, got {layers!r}") from None
    if data:
        options.train_data = data
    if heldout:
        options.heldout = heldout
    if steps is not None and minutes is not None:
        raise DataError("--steps and --minutes both size the run; give one of them")
    if steps is not None:
        if steps < 1:
            raise DataError(f"--steps must be at least 1, got {steps}")
        options.steps = steps
    elif minutes is not None:
        kd_s, ce_s = probe_step_seconds(options)
        budget = minutes * 60 - EVAL_RESERVE_S
        options.steps = max(1, int(budget / (kd_s + ce_s)))
        console.print(f"--minutes {minutes:g}: a distillation step takes ~{kd_s:.1f} s and a baseline step "
                      f"~{ce_s:.1f} s here, so each student gets {options.steps} steps")
    return options


def probe_step_seconds(options: DemoOptions) -> tuple[float, float]:
    """Time one distillation step and one cross-entropy step of the demo's shapes (after a warm-up step)."""
    import torch

    from distill.models import build_student, load_teacher, load_tokenizer
    from distill.objectives.offpolicy import OffPolicyObjective

    recipe = recipe_for(options, "kd")
    tokenizer = load_tokenizer("teacher.model", *recipe.tokenizer_options())
    teacher = load_teacher(recipe.teacher)
    student = build_student(recipe, tokenizer, teacher)
    ids = torch.randint(0, len(tokenizer), (options.batch_size, options.max_length))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    times = []
    for alpha, model in ((0.0, teacher), (1.0, None)):
        objective = OffPolicyObjective(student, model, recipe.objective.model_copy(update={"alpha": alpha}),
                                       len(tokenizer))
        for _ in range(2):  # the first step warms up allocators and kernels
            began = time.perf_counter()
            objective(**batch)["total"].backward()
            elapsed = time.perf_counter() - began
        times.append(elapsed)
    return times[0], times[1]
