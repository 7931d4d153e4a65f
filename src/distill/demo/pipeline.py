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
import time
from pathlib import Path

from rich.console import Console

from distill.atomic import write_folder
from distill.demo.plan import DemoOptions, apply_model_flags, recipe_for
from distill.errors import DataError
from distill.recipe import Recipe, dump_recipe
from distill.results.io import load_result, write_result
from distill.results.layout import DEMO_INIT, EVAL, INIT_LAYERS, RECIPE, REPORT_MD, STUDENT, SUMMARY
from distill.results.schema import EvalResult

console = Console(stderr=True)


def run_demo(options: DemoOptions) -> Path:
    """Run (or finish) the demo in `options.out`; returns the report path."""
    from distill.builtin.registry import resolve

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    with stage("teacher", walls):
        teacher_path = resolve(options.teacher, "model")
    with stage("data", walls):
        from distill.data.sources import read_records

        for source in (options.train_data, options.heldout, options.ood):
            if source:
                read_records(source, field=f"demo data {source}", limit=1)
    recipes = {which: recipe_for(options, which) for which in ("kd", "baseline")}
    with stage("init", walls):
        init_dir = copied_student(recipes["kd"], out / DEMO_INIT)
    for which, recipe in recipes.items():
        with stage(f"train {which}", walls):
            _train(recipe)
    with stage("eval", walls):
        from distill.demo.evaluation import evaluate_demo

        key = _inputs_key(options, recipes)
        eval_path = out / EVAL
        if _evaluated(eval_path, key) is None:
            models = {"teacher": teacher_path, "kd": out / "kd" / STUDENT, "baseline": out / "baseline" / STUDENT,
                      "init": init_dir}
            write_result(eval_path, evaluate_demo(options, models, recipes).model_copy(update={"inputs_key": key}))
        else:
            console.print(f"[dim]eval: inputs unchanged, reusing {EVAL}[/dim]")
    with stage("report", walls):
        from distill.demo.summary import build_summary
        from distill.eval.summary_table import print_summary
        from distill.report.render import write_report

        summary = build_summary(options, load_result(eval_path), recipes, walls)
        write_result(out / SUMMARY, summary)
        html, _ = write_report(out)
    print_summary(summary)
    console.print(f"\nreport: [bold]{html}[/bold]  (markdown: {out / REPORT_MD}, data: {out / SUMMARY})")
    return html


class stage:
    """Print a stage's start and end, and record its wall time."""

    def __init__(self, name: str, walls: dict[str, float]):
        self.name, self.walls = name, walls

    def __enter__(self) -> None:
        console.rule(f"[bold]{self.name}")
        self.began = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.walls[self.name] = round(time.perf_counter() - self.began, 1)


def copied_student(recipe: Recipe, folder: Path) -> Path:
    """The student as initialised, before any training: the 'untrained copy' row of the comparison."""
    marker = folder / INIT_LAYERS
    layers = list(recipe.student.from_teacher.layers)
    if marker.exists() and json.loads(marker.read_text()) == {"teacher": recipe.teacher.model, "layers": layers}:
        console.print(f"[dim]init: reusing {folder}[/dim]")
        return folder
    from distill.models import build_student, load_teacher, load_tokenizer

    tokenizer = load_tokenizer("teacher.model", *recipe.tokenizer_options())
    student = build_student(recipe, tokenizer, load_teacher(recipe.teacher))
    with write_folder(folder) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / INIT_LAYERS).write_text(json.dumps({"teacher": recipe.teacher.model, "layers": layers}))
    return folder


def _train(recipe: Recipe) -> None:
    from distill.training.loop import train

    run_dir = Path(recipe.training.output_dir)
    saved = run_dir / RECIPE
    same = saved.exists() and saved.read_text() == dump_recipe(recipe)
    if same and (run_dir / STUDENT / "config.json").exists():
        console.print(f"[dim]{run_dir.name}: finished with these settings, reusing {run_dir / STUDENT}[/dim]")
        return
    if saved.exists() and not same:
        console.print(f"{run_dir.name}: settings changed since the last run; training it again")
        train(recipe, overwrite=True)
    else:
        train(recipe, resume=True)


def _evaluated(path: Path, key: str) -> EvalResult | None:
    """The evaluation in `path` when it was made from the same inputs; one that is unreadable or of another schema
    version is made again."""
    if not path.exists():
        return None
    try:
        result = load_result(path)
    except DataError as exc:
        console.print(f"eval: {exc}; evaluating again")
        return None
    return result if result.inputs_key == key else None


def _inputs_key(options: DemoOptions, recipes: dict[str, Recipe]) -> str:
    payload = json.dumps({"options": options.as_json(), "recipes": {k: dump_recipe(r) for k, r in recipes.items()}},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
    apply_model_flags(options, teacher=teacher, layers=layers, lr=lr)
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

    from distill.data.batch import Batch
    from distill.models import build_student, load_teacher, load_tokenizer
    from distill.objectives.registry import build_objective
    from distill.teachers.source import LiveTeacher

    recipe = recipe_for(options, "kd")
    tokenizer = load_tokenizer("teacher.model", *recipe.tokenizer_options())
    teacher = load_teacher(recipe.teacher)
    student = build_student(recipe, tokenizer, teacher)
    ids = torch.randint(0, len(tokenizer), (options.batch_size, options.max_length))
    batch = Batch(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    times = []
    live = LiveTeacher.for_implementation(teacher, len(tokenizer), recipe.objective.implementation)
    for alpha, source in ((0.0, live), (1.0, None)):
        objective = build_objective(student, recipe.objective.model_copy(update={"alpha": alpha}), len(tokenizer),
                                    with_teacher=source is not None)
        for _ in range(2):  # the first step warms up allocators and kernels
            began = time.perf_counter()
            objective(batch, source.signal(batch) if source is not None else None).total.backward()
            elapsed = time.perf_counter() - began
        times.append(elapsed)
    return times[0], times[1]
