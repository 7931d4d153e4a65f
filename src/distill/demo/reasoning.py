"""`distill demo reasoning`: the DeepSeek-R1 distillation recipe end to end on a CPU (docs/reasoning.md).

Stages, and what makes each one cheap on a second run:
  generate   the teacher samples solutions to the training problems, the verifier judges them, rejection sampling
             keeps the correct ones (`distill generate`'s pipeline; resumable, reused when its settings are unchanged)
  data       the verified arm trains on generate/train.jsonl as it is; the unverified arm on as many samples drawn
             at random from all of them (data/unverified.jsonl, deterministic in the seed)
  init       the copied student before training (`init/`)
  train      one run per arm with `distill train`'s loop; reused when its recipe and data are unchanged
  eval       every model answers the held-out problems greedily (eval/<arm>.jsonl, reused while unchanged)
  result     reasoning.json (the data) and reasoning.md (the table, made from reasoning.json only)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from distill.atomic import read_jsonl, write_json, write_jsonl
from distill.demo.pipeline import console, copied_student, stage
from distill.demo.reasoning_plan import ReasoningOptions, arm_recipe, generation_recipe
from distill.errors import DataError
from distill.recipe import Recipe, dump_recipe
from distill.results.layout import RECIPE, STUDENT

RESULT, TABLE = "reasoning.json", "reasoning.md"


def run_reasoning_demo(options: ReasoningOptions) -> Path:
    """Run (or finish) the demo in `options.out`; returns the result file."""
    options.check()
    began = time.perf_counter()
    threads = _set_threads(options.threads)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    with stage("generate", walls):
        manifest = _generate(options)
    with stage("data", walls):
        data = _arm_data(options, manifest)
    rows = len(read_jsonl(data["verified"]))
    recipes = {arm: arm_recipe(options, arm, data[arm], rows) for arm in options.arms}
    with stage("init", walls):
        init_dir = copied_student(recipes["verified"], out / "init")
    for arm, recipe in recipes.items():
        with stage(f"train {arm}", walls):
            _train_arm(recipe, _sha256(data[arm]), out / "data" / f"{arm}.trained-on")
    with stage("eval", walls):
        from distill.demo.reasoning_eval import heldout_prompts

        prompts, skipped = heldout_prompts(options)
        models = {"init": init_dir, **{arm: out / arm / STUDENT for arm in options.arms}, "teacher": options.teacher}
        evaluated = {name: _evaluate(options, name, path, prompts) for name, path in models.items()}
    with stage("result", walls):
        from distill.demo.reasoning_report import write_table
        from distill.demo.reasoning_result import build_result

        result = build_result(options, manifest, data, recipes, evaluated, prompts, skipped, walls, threads,
                              time.perf_counter() - began)
        write_json(out / RESULT, result.to_json())
        table = write_table(out / RESULT, out / TABLE)
    print(table)
    console.print(f"\nresult: [bold]{out / RESULT}[/bold]  (table: {out / TABLE})")
    return out / RESULT


def _set_threads(requested: int | None) -> int:
    """1 torch thread when other work loads the CPUs: with 2 threads on 2 busy cores OpenMP's spin-waiting made
    generation 30-50x slower here (docs/reasoning.md); all of them on an idle machine."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or (1 if os.getloadavg()[0] >= 0.5 else cpus)
    torch.set_num_threads(threads)
    return threads


def _generate(options: ReasoningOptions) -> dict[str, Any]:
    from distill.generation.journal import SetupChanged
    from distill.generation.run import MANIFEST, run_generation

    recipe = generation_recipe(options)
    assert recipe.generate is not None
    manifest = Path(recipe.generate.output) / MANIFEST
    stale = manifest.exists() and json.loads(manifest.read_text())["generate"] != recipe.generate.model_dump(
        mode="json")
    if stale:
        console.print("generate: settings changed since the last run; generating again")
    try:
        return run_generation(recipe, overwrite=stale, progress=True)
    except SetupChanged as exc:  # the journal's own check: a setup the manifest does not show (the tokenizer)
        console.print(f"generate: {exc}; generating again")
        return run_generation(recipe, overwrite=True, progress=True)


def _arm_data(options: ReasoningOptions, manifest: dict[str, Any]) -> dict[str, Path]:
    """Each arm's training file. Verified: the rows rejection sampling kept. Unverified: the same number of rows
    drawn uniformly, without replacement, from every sample the teacher wrote, right or wrong."""
    from distill.generation.run import SAMPLES, TRAIN

    folder = Path(options.out / "generate")
    kept = read_jsonl(folder / TRAIN)
    if not kept:
        raise DataError(f"demo reasoning: the verifier accepted none of the teacher's {manifest['counts']['samples']} "
                        "samples, so there is nothing to train on; sample more problems (--minutes) or check the "
                        f"verifier on {folder / SAMPLES}")
    samples = read_jsonl(folder / SAMPLES)
    drawn = random.Random(options.seed).sample(samples, len(kept))
    unverified = options.out / "data" / "unverified.jsonl"
    write_jsonl(unverified, drawn)
    return {"verified": folder / TRAIN, "verified_kd": folder / TRAIN, "unverified": unverified}


def _train_arm(recipe: Recipe, data_key: str, marker: Path) -> None:
    """Train one arm, or reuse its finished student when the recipe and the data it read are unchanged (the recipe
    names the data file, not its contents, hence the marker); a killed run resumes."""
    from distill.training.loop import train

    run_dir = Path(recipe.training.output_dir)
    saved = run_dir / RECIPE
    same = (saved.exists() and saved.read_text() == dump_recipe(recipe) and marker.exists()
            and marker.read_text() == data_key)
    if same and (run_dir / STUDENT / "config.json").exists():
        console.print(f"[dim]{run_dir.name}: finished with these settings and data, reusing {run_dir / STUDENT}[/dim]")
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(data_key)
    if saved.exists() and not same:
        console.print(f"{run_dir.name}: settings or data changed since the last run; training it again")
        train(recipe, overwrite=True)
    else:
        train(recipe, resume=True)


def _evaluate(options: ReasoningOptions, name: str, path: Path | str, prompts: list[Any]) -> dict[str, Any]:
    """The model's judged answers (eval/<name>.jsonl) and parameter count, reused while the weights and the
    evaluation settings are unchanged."""
    from distill.builtin.registry import resolve
    from distill.generation.verifiers import build_verifier
    from distill.models import load_tokenizer

    folder = Path(resolve(str(path), "model")) if str(path).startswith("builtin:") else Path(path)
    weights = sorted(folder.glob("*.safetensors"))
    key = hashlib.sha256(json.dumps({"weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
                                     "problems": [p.record["prompt"] for p in prompts],
                                     "settings": [options.system, options.eval_max_new_tokens, options.verifier]},
                                    sort_keys=True).encode()).hexdigest()[:16]
    rows_path, meta_path = options.out / "eval" / f"{name}.jsonl", options.out / "eval" / f"{name}.json"
    if meta_path.exists() and rows_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        console.print(f"[dim]eval {name}: unchanged, reusing {rows_path}[/dim]")
        return {**json.loads(meta_path.read_text()), "rows": read_jsonl(rows_path), "path": str(folder)}
    from distill.demo.reasoning_eval import answer_all

    tokenizer = load_tokenizer("teacher.model", options.teacher)
    started = time.perf_counter()
    rows, params = answer_all(folder, tokenizer, prompts, build_verifier(options.verifier), options)
    meta = {"key": key, "params": params, "seconds": round(time.perf_counter() - started, 1)}
    write_jsonl(rows_path, rows)
    write_json(meta_path, meta)
    console.print(f"eval {name}: {sum(r['correct'] for r in rows)}/{len(rows)} correct ({meta['seconds']} s)")
    return {**meta, "rows": rows, "path": str(folder)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
