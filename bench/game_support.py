"""The machinery of bench/defense_game.py: the defended teacher's answers, the thieves' training runs, their
evaluation, the audit of the watermark rows, and the table. Every stage writes its result under the run folder and
is skipped when that result exists, so a killed run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.atomic import read_jsonl, write_jsonl
from distill.demo.reasoning_eval import wilson
from distill.demo.reasoning_plan import TASK_CONFIG, VERIFIER  # noqa: F401  (TASK_CONFIG: for defense_game.py)

EVAL_SEED = 5_000_000
LOGPROB_CONFIGS = ("base", "truncation_k0")  # where the log-prob thief is measured
# name → (defense family, strength shown, sampling temperature, key-file sections beyond the watermark secret)
CONFIGS: dict[str, dict[str, Any]] = {
    "base": {"defense": "temperature", "strength": 0.8, "temperature": 0.8},
    "temperature_1.3": {"defense": "temperature", "strength": 1.3, "temperature": 1.3},
    "poe_0.5": {"defense": "poe", "strength": 0.5, "temperature": 0.8},
    "poe_0.8": {"defense": "poe", "strength": 0.8, "temperature": 0.8},
    # λ: the proxy's Δ = (z⁺ − z⁻)/(2ε) has a standard deviation of ~100 over the teacher's top-10 tokens here (g
    # unnormalised, ‖g‖ ≈ 8.7), so λ 0.003 moves them by ~0.3 logits and 0.01 by ~1; λ 0.05 writes gibberish
    "antidistillation_0.003": {"defense": "antidistillation", "strength": 0.003, "temperature": 0.8},
    "antidistillation_0.01": {"defense": "antidistillation", "strength": 0.01, "temperature": 0.8},
    "watermark_d2": {"defense": "watermark", "strength": 2.0, "temperature": 0.8},
    "watermark_d4": {"defense": "watermark", "strength": 4.0, "temperature": 0.8},
    "truncation_k0": {"defense": "truncation", "strength": 0, "temperature": 0.8, "same_samples_as": "base"},
}


def log(message: str) -> None:
    print(f"[game {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


def provenance(threads: int) -> dict[str, Any]:
    from harness import provenance as base

    return {**base(), "torch_threads": threads}


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


class Game:
    """One game's folders and stages (see defense_game.py's docstring for the design)."""

    def __init__(self, options: Any):
        from distill.generation.verifiers import build_verifier
        from distill.models import load_tokenizer

        self.o = options
        self.out = Path(options.out)
        self.tokenizer = load_tokenizer("teacher.model", options.teacher)
        self.verify = build_verifier(VERIFIER)
        self._gradients: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------------------------------------ problems
    def _reasoning_options(self, **updates: Any) -> Any:
        from distill.demo.reasoning_plan import ReasoningOptions

        o = self.o
        settings = dict(out=self.out, teacher=o.teacher, layers=o.layers, task_config=dict(o.task_config), samples=1,
                        max_accepted=1, top_p=o.top_p, max_new_tokens=o.max_new_tokens,
                        eval_max_new_tokens=o.eval_max_new_tokens, gen_batch_size=o.gen_batch_size,
                        eval_batch_size=o.eval_batch_size, steps=o.steps, batch_size=o.batch_size, lr=o.lr,
                        threads=o.threads)
        return ReasoningOptions(**{**settings, **updates})

    def _generation_recipe(self, *, seed: int, task_seed: int, size: int, temperature: float, folder: Path,
                           defenses: Path | None) -> Any:
        from distill.demo.reasoning_plan import generation_recipe

        recipe = generation_recipe(self._reasoning_options(out=folder, prompts=size, train_seed=task_seed,
                                                           temperature=temperature, seed=seed))
        generate = recipe.generate.model_copy(update={"output": str(folder)})
        if defenses is not None:
            generate = generate.model_copy(update={"defenses": str(defenses)})
        return recipe.model_copy(update={"generate": generate})

    def _train_seed(self, seed: int) -> int:
        return 1_000 + 1_000 * seed

    def eval_prompts(self) -> list[Any]:
        from distill.generation.prompts import load_prompts

        seen: set[str] = set()
        for seed in self.o.seeds:
            recipe = self._generation_recipe(seed=seed, task_seed=self._train_seed(seed), size=self.o.train_problems,
                                             temperature=self.o.temperature, folder=self.out, defenses=None)
            seen |= {p.record["prompt"] for p in load_prompts(recipe.generate)}
        recipe = self._generation_recipe(seed=0, task_seed=EVAL_SEED, size=4 * self.o.eval_problems + len(seen),
                                         temperature=0.0, folder=self.out, defenses=None)
        fresh = [p for p in load_prompts(recipe.generate) if p.record["prompt"] not in seen]
        return fresh[: self.o.eval_problems]

    # ------------------------------------------------------------------------------------------------ models
    def init_dir(self) -> Path:
        from distill.demo.pipeline import copied_student

        return copied_student(self._train_recipe(self.out / "init-recipe", self.out / "none.jsonl", seed=0),
                              self.out / "init")

    def _train_recipe(self, output: Path, data: Path, *, seed: int) -> Any:
        from distill.recipe import validate_recipe

        o = self.o
        raw = {"seed": seed, "teacher": {"model": o.teacher}, "student": {"from_teacher": {"layers": list(o.layers)}},
               "data": {"train": str(data), "format": "messages", "max_length": 192},
               "objective": {"kind": "seqkd", "alpha": 1.0},
               "training": {"output_dir": str(output), "max_steps": o.steps, "batch_size": o.batch_size,
                            "micro_batch_size": o.batch_size, "lr": o.lr, "warmup_steps": 0,
                            # only the student is wanted: no resumable checkpoint (1.5 GB, ~10% of a cell)
                            "save_every": o.steps + 1, "save_final": False, "log_every": 1}}
        return validate_recipe(raw, source="defense game thief recipe")

    def evaluate_once(self, name: str, model_dir: Path) -> dict[str, Any]:
        """Greedy answers to the evaluation problems, judged; stored in eval/<name>.json."""
        path = self.out / "eval" / f"{name}.json"
        if path.exists():
            return _read(path)
        from distill.demo.reasoning_eval import answer_all

        prompts = self.eval_prompts()
        started = time.perf_counter()
        rows, _ = answer_all(model_dir, self.tokenizer, prompts, self.verify,
                             self._reasoning_options(seed=0))
        correct = [bool(r["correct"]) for r in rows]
        result = {"accuracy": sum(correct) / len(rows), "correct": correct,
                  "ids": [r["id"] for r in rows], "seconds": round(time.perf_counter() - started, 1)}
        _write(path, result)
        log(f"eval {name}: {sum(result['correct'])}/{len(rows)} ({result['seconds']} s)")
        return result

    # ------------------------------------------------------------------------------------------------ teacher
    def holdout_traces(self, seed: int) -> Path:
        """The undefended teacher's answers to the held-out problems: the thief's and the defender's held-out set."""
        folder = self.out / f"seed{seed}" / "holdout"
        recipe = self._generation_recipe(seed=seed, task_seed=3_000_000 + 1_000 * seed, size=self.o.holdout_problems,
                                         temperature=self.o.temperature, folder=folder, defenses=None)
        return self._generate(recipe, folder)

    def _generate(self, recipe: Any, folder: Path) -> Path:
        from distill.generation.run import SAMPLES, run_generation

        if not (folder / SAMPLES).exists():
            started = time.perf_counter()
            run_generation(recipe, overwrite=True, progress=False)
            log(f"generate {folder.relative_to(self.out)}: {time.perf_counter() - started:.0f} s")
        return folder / SAMPLES

    def keyfile(self, seed: int, config: str, holdout: Path) -> Path | None:
        """The defense key file of a config (the watermark's secret is fixed per seed: a bench key, not a secret)."""
        spec = CONFIGS[config]
        family = spec["defense"]
        if family in ("temperature",):
            return None
        path = self.out / f"seed{seed}" / config / "keys.yaml"
        secret = hashlib.sha256(f"defense-game-bench-seed-{seed}".encode()).hexdigest()
        keys: dict[str, Any] = {"version": 1}
        if family == "watermark":
            keys["watermark"] = {"secret": secret, "context_width": 1, "gamma": 0.25, "delta": spec["strength"]}
        elif family == "poe":
            keys["poe"] = {"proxy": str(self.init_dir()), "gamma": spec["strength"]}
        elif family == "antidistillation":
            gradient = self._ad_gradient(seed, holdout)
            keys["antidistillation"] = {"proxy": str(self.init_dir()), "gradient": str(gradient),
                                        "lam": spec["strength"], "eps": 1e-4, "tau": 1.0}
        elif family == "truncation":
            keys["exposure"] = {"max_top_logprobs": spec["strength"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(keys, indent=1))
        return path

    def _ad_gradient(self, seed: int, holdout: Path) -> Path:
        """`distill defenses gradient` on the proxy (the untrained student) over the held-out traces."""
        from distill.defenses.gradient import write_gradient

        path = self.out / f"seed{seed}" / "ad-gradient.safetensors"
        if not path.exists():
            write_gradient(str(self.init_dir()), str(holdout), path, device="cpu")
        return path

    def teacher_rows(self, seed: int, config: str, holdout: Path) -> dict[str, Any]:
        spec = CONFIGS[config]
        source = spec.get("same_samples_as")
        folder = self.out / f"seed{seed}" / (source or config) / "teacher"
        if source:  # the key file is still written: what the defense would serve with
            self.keyfile(seed, config, holdout)
            keys = None
        else:
            keys = self.keyfile(seed, config, holdout)
        recipe = self._generation_recipe(seed=seed, task_seed=self._train_seed(seed), size=self.o.train_problems,
                                         temperature=spec["temperature"], folder=folder, defenses=keys)
        samples = self._generate(recipe, folder)
        rows = read_jsonl(samples)
        return {"path": samples, "rows": rows, "keys": self.out / f"seed{seed}" / config / "keys.yaml",
                "utility": [bool(r["accepted"]) for r in rows], "same_samples_as": source}

    # ------------------------------------------------------------------------------------------------ thieves
    def _values(self, seed: int, rows: list[dict[str, Any]], holdout: Path) -> list[float]:
        import torch

        from distill.attacks.value import mean_gradient, trace_values
        from distill.data.formatting import encode_messages
        from distill.models import load_causal_lm

        if seed not in self._gradients:
            model = load_causal_lm("defense game student", str(self.init_dir()), None, False, torch.float32)
            held = [encode_messages(r, self.tokenizer, f"holdout {i}") for i, r in enumerate(read_jsonl(holdout))]
            self._gradients = {seed: {"model": model, "g": mean_gradient(model, held, self.tokenizer.eos_token_id)}}
        state = self._gradients[seed]
        examples = [encode_messages(r, self.tokenizer, f"row {i}") for i, r in enumerate(rows)]
        return trace_values(state["model"], examples, state["g"], self.tokenizer.eos_token_id, eps=self.o.fd_eps)

    def cell(self, seed: int, config: str, thief: str, teacher: dict[str, Any], holdout: Path) -> dict[str, Any]:
        from distill.attacks.students import thief_rows

        path = self.out / "cells" / f"seed{seed}-{config}-{thief}.json"
        if path.exists():
            return _read(path)
        source = CONFIGS[config].get("same_samples_as")
        if thief == "logprob":
            return self._logprob_cell(seed, config, teacher, holdout, path)
        if source:  # the same samples, the same seeded training: the source cell's student, not trained twice
            cell = {**self.cell(seed, source, thief, teacher, holdout), "config": config,
                    **{k: CONFIGS[config][k] for k in ("defense", "strength")}, "reused_from": source}
            _write(path, cell)
            return cell
        started = time.perf_counter()
        rows = teacher["rows"]
        adaptive = thief in ("adaptive", "adaptive_literal")
        values = self._values(seed, rows, holdout) if adaptive else None
        chosen = thief_rows("adaptive" if adaptive else thief, rows, seed=seed, values=values, beta=self.o.beta,
                            sign=-1 if thief == "adaptive_literal" else 1)
        run_dir = self.out / f"seed{seed}" / config / thief
        cell: dict[str, Any] = {"seed": seed, "config": config, **{k: CONFIGS[config][k] for k in
                                                                  ("defense", "strength")},
                                "thief": thief, "teacher_utility": sum(teacher["utility"]) / len(teacher["utility"]),
                                "teacher_correct": teacher["utility"], "rows": len(chosen),
                                "rows_accepted": sum(bool(r["accepted"]) for r in chosen),
                                "same_samples_as": teacher["same_samples_as"]}
        if not chosen:
            cell.update({"accuracy": None, "correct": None, "note": "no rows to train on"})
        else:
            data = run_dir / "train.jsonl"
            write_jsonl(data, [{"messages": r["messages"]} for r in chosen])
            from distill.training.loop import train

            train(self._train_recipe(run_dir / "run", data, seed=seed), overwrite=True)
            evaluation = self.evaluate_once(f"seed{seed}-{config}-{thief}", run_dir / "run" / "student")
            cell.update({"accuracy": evaluation["accuracy"], "correct": evaluation["correct"]})
            if CONFIGS[config]["defense"] == "watermark":
                cell["audit"] = self._audit(run_dir / "run" / "student", teacher)
        cell["seconds"] = round(time.perf_counter() - started, 1)
        _write(path, cell)
        return cell

    def _logprob_cell(self, seed: int, config: str, teacher: dict[str, Any], holdout: Path, path: Path
                      ) -> dict[str, Any]:
        """The log-prob thief: the passive thief's rows plus logit KD (seqkd, alpha 0.5) on the top-k log-probs the
        API returns with them — what `distill cache` with `teacher.api` harvests, built here in-process from the
        teacher at the same k. Only for the undefended teacher (k = 20, the server's default `max_logprobs`) and
        for truncation (k = 0: no alternatives come back, so no top-k cache can be made and the thief is the
        passive one, by construction)."""
        spec = CONFIGS[config]
        k = spec["strength"] if spec["defense"] == "truncation" else 20
        if spec["defense"] not in ("temperature", "truncation") or (spec["defense"] == "temperature"
                                                                   and config != "base"):
            raise ValueError(f"the log-prob thief is measured on base and truncation rows only, not {config}")
        if k == 0:
            cell = {**self.cell(seed, config, "passive", teacher, holdout), "thief": "logprob",
                    "note": "k = 0: no log-probs to distil; the thief falls back to the text (the passive thief)"}
            _write(path, cell)
            return cell
        from distill.teachers.cache.build import build_cache
        from distill.training.loop import train

        started = time.perf_counter()
        run_dir = self.out / f"seed{seed}" / config / "logprob"
        data = run_dir / "train.jsonl"
        write_jsonl(data, [{"messages": r["messages"]} for r in teacher["rows"]])
        recipe = self._train_recipe(run_dir / "run", data, seed=seed)
        recipe = recipe.model_copy(update={
            "teacher": recipe.teacher.model_copy(update={"top_k": k, "capture_temperature": 1.0}),
            "objective": recipe.objective.model_copy(update={"alpha": 0.5, "temperature": 1.0})})
        from distill.recipe import validate_recipe

        raw = recipe.model_dump(mode="json", exclude_none=True)
        build_cache(validate_recipe(raw, source="log-prob thief"), run_dir / "cache", overwrite=True)
        raw["teacher"]["cache"] = str(run_dir / "cache")
        train(validate_recipe(raw, source="log-prob thief"), overwrite=True)
        evaluation = self.evaluate_once(f"seed{seed}-{config}-logprob", run_dir / "run" / "student")
        cell = {"seed": seed, "config": config, "defense": spec["defense"], "strength": spec["strength"],
                "thief": "logprob", "teacher_utility": sum(teacher["utility"]) / len(teacher["utility"]),
                "teacher_correct": teacher["utility"], "rows": len(teacher["rows"]), "top_k": k,
                "rows_accepted": sum(bool(r["accepted"]) for r in teacher["rows"]),
                "same_samples_as": teacher["same_samples_as"], "accuracy": evaluation["accuracy"],
                "correct": evaluation["correct"], "seconds": round(time.perf_counter() - started, 1)}
        _write(path, cell)
        return cell

    def _audit(self, student: Path, teacher: dict[str, Any]) -> dict[str, Any]:
        """`distill audit STUDENT --against KEYS --watermarked SAMPLES` (open mode, de-duplicated)."""
        from distill.forensics.run import AuditOptions, run_audit

        result = run_audit(AuditOptions(suspect=str(student), keyfile=teacher["keys"], watermarked=str(teacher["path"]),
                                        canaries=False), echo=lambda _m: None).to_json()
        (test,) = [t for t in result["watermark"] if t["mode"] == "open"]
        return {"p_value": test["pvalue"]["p_value"], "log10_p_value": test["pvalue"].get("log10_p_value"),
                "pairs": test["pairs_scored"], "green": test.get("green")}


# ---------------------------------------------------------------------------------------------------- workers
CLAIMS = "claims"


def clear_claims(out: Path) -> None:
    """Forget which worker took which (seed, config): before workers start (a killed run's claims are stale; its
    finished cells are on disk and are skipped anyway)."""
    shutil.rmtree(out / CLAIMS, ignore_errors=True)


def claim(out: Path, seed: int, config: str) -> bool:
    """Take (seed, config) for this worker unless another took it first: creating the claim file is atomic, so
    workers share the pairs as they free up (a static split left one worker idle for minutes at the end)."""
    folder = out / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / f"seed{seed}-{config}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- summary
def gain_interval(per_seed: dict[int, list[bool]], init: list[bool], reps: int = 4000, seed: int = 0
                  ) -> dict[str, float]:
    """Mean over seeds and problems of student-correct − init-correct, with a 95% percentile interval from a
    bootstrap that resamples seeds and problems (the same problems for every seed: the evaluation set is shared)."""
    seeds = sorted(per_seed)
    diff = np.array([[float(a) - float(b) for a, b in zip(per_seed[s], init, strict=True)] for s in seeds])
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, len(seeds), size=(reps, len(seeds)))
    p_idx = rng.integers(0, diff.shape[1], size=(reps, diff.shape[1]))
    boot = np.array([diff[np.ix_(s_idx[r], p_idx[r])].mean() for r in range(reps)])
    return {"mean": float(diff.mean()), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975))}


def summarize(options: Any, init_eval: dict[str, Any], cells: list[dict[str, Any]]) -> dict[str, Any]:
    table = []
    for config in options.configs:
        mine = [c for c in cells if c["config"] == config]
        if not mine:
            continue
        by_seed = {c["seed"]: c["teacher_correct"] for c in mine}
        answers = [x for s in sorted(by_seed) for x in by_seed[s]]
        row: dict[str, Any] = {"config": config, "defense": mine[0]["defense"], "strength": mine[0]["strength"],
                               "teacher_utility": wilson(sum(answers), len(answers)),
                               "same_samples_as": CONFIGS[config].get("same_samples_as"), "thieves": {}}
        for thief in options.thieves:
            these = [c for c in mine if c["thief"] == thief and c.get("correct") is not None]
            if not these:
                continue
            entry: dict[str, Any] = {"accuracy": float(np.mean([c["accuracy"] for c in these])),
                                     "gain": gain_interval({c["seed"]: c["correct"] for c in these},
                                                           init_eval["correct"]),
                                     "seeds": len(these)}
            audits = [c["audit"] for c in these if c.get("audit")]
            if audits:
                entry["audit_p"] = [a["p_value"] for a in audits]
                entry["audit_pairs"] = [a["pairs"] for a in audits]
            row["thieves"][thief] = entry
        table.append(row)
    return {"init_accuracy": init_eval["accuracy"], "eval_problems": len(init_eval["correct"]), "table": table}


def write_outputs(out: Path, summary: dict[str, Any]) -> None:
    """game.json through its schema (distill.results.game), then `distill report`'s report.md / report.html of it
    (the table and the utility-vs-gain plot, report/game.py)."""
    from distill.atomic import write_json
    from distill.report.render import write_report
    from distill.results.game import GAME, GameResult

    write_json(out / GAME, GameResult.for_writing(summary).to_json())
    html, md = write_report(out / GAME)
    log(f"wrote {out / GAME}, {md}, {html}")
