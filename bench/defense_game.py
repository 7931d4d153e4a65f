"""The distillation game, measured: what each serve-time defense costs the teacher's own users against what it takes
from a thief who distils the teacher's outputs (issue 14; docs/defenses.md has the threat model).

    .venv/bin/python bench/defense_game.py                # the full table, two workers (~45 min)
    .venv/bin/python bench/defense_game.py --quick        # a smoke run on the tiny built-in teacher (~2 min)
    .venv/bin/python bench/defense_game.py --configs base,watermark_d4 --seeds 0

Design (defaults in `Options`):
  task      the reasoning recipe's: reasoning-gym basic_arithmetic (2 terms, 1-2 digits, + and -), chat prompts with
            its system prompt, the `final_number` verifier; teacher SmolLM2-135M-Instruct (builtin, offline).
  per seed  24 training problems (task seed 1,000 + 1,000·seed) the thief sends to the defended teacher, one sample
            each; 16 held-out problems (seed 3,000,000 + 1,000·seed) whose *undefended* teacher traces are the
            thief's held-out set (the adaptive thief's gradient) and the defender's (antidistillation's gradient),
            as in the Distillation Game's code; 40 evaluation problems (seed 5,000,000, questions seen in training
            skipped), the same for every seed.
  teacher   utility = the share of its defended answers to the training problems the verifier accepts: what the
            defense costs the people the API serves, on exactly the traffic the thief saw.
  thieves   the reasoning recipe's student (the teacher without layers 26-27), fine-tuned with seqkd for `steps`
            steps of `batch_size` rows, lr `lr`, on 24 rows chosen by each thief (distill.attacks.students):
            passive (all), adaptive (value-resampled, β 1) and verifier (accepted only); on the base and truncation
            rows also a log-prob thief (the passive rows plus logit KD, seqkd alpha 0.5, on the top-k log-probs the
            API returns: k = 20 undefended, none at k = 0). Gain = the student's greedy accuracy on the evaluation
            problems minus the untrained student's.
  defenses  base (T 0.8), temperature 1.3, PoE γ, antidistillation λ, watermark δ 2 and 4 (γ 0.25, h 1), and
            log-prob truncation (k = 0): the proxy of PoE and antidistillation is the untrained student itself (the
            defender knows the thief's architecture: the best case for the defender). Truncation changes only the
            returned log-probs, so its row re-uses the base samples (`same_samples_as`): its text thieves are the
            base row's by construction, and only the log-prob thief differs.
  audit     for the watermark rows, the open-mode radioactivity test (distill.forensics) of each thief's student on
            the teacher's watermarked answers, with de-duplication: the p-value and the scored pairs.
  intervals teacher utility: Wilson over all (seed, problem) answers; gains: a paired bootstrap over (seed,
            evaluation problem) of student-correct − init-correct, resampling seeds and problems.

Output: JSON lines on stdout (one per cell, the last a summary with the table), progress on stderr, and in --out
(default runs/defense_game/) game.json (distill.results.game, the table) and the report `distill report` makes of it
(report.md, report.html: the table and the utility-vs-gain plot). Every cell is stored as it finishes; a killed run
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import game_support as support  # noqa: E402


@dataclass
class Options:
    out: Path = Path("runs/defense_game")
    teacher: str = "builtin:smollm2-135m-instruct"
    layers: tuple[int, ...] = tuple(i for i in range(30) if i not in (26, 27))
    seeds: tuple[int, ...] = (0, 1, 2)
    train_problems: int = 24
    holdout_problems: int = 16
    eval_problems: int = 40
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 80
    eval_max_new_tokens: int = 64
    steps: int = 3
    batch_size: int = 8
    lr: float = 2e-4
    beta: float = 1.0
    fd_eps: float = 1e-3
    configs: tuple[str, ...] = ("base", "temperature_1.3", "poe_0.5", "antidistillation_0.003",
                                "antidistillation_0.01", "watermark_d2", "watermark_d4", "truncation_k0")
    thieves: tuple[str, ...] = ("passive", "adaptive", "verifier", "logprob")
    gen_batch_size: int = 32
    eval_batch_size: int = 40
    threads: int = 1
    shard: tuple[int, int] | None = None  # (k, n): this process runs every n-th (seed, config), from the k-th
    prepare: bool = False
    workers: int = 2
    task_config: dict[str, Any] = field(default_factory=lambda: dict(support.TASK_CONFIG))


def quick_options(options: Options) -> Options:
    return replace(options, teacher="builtin:tiny-teacher", layers=(0, 1, 2), seeds=(0,), train_problems=6,
                   holdout_problems=4, eval_problems=6, max_new_tokens=16, eval_max_new_tokens=16, steps=1,
                   batch_size=4, configs=("base", "poe_0.5", "antidistillation_0.01", "watermark_d4", "truncation_k0"),
                   out=options.out if options.out != Options.out else Path("runs/defense_game_quick"))


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--quick", action="store_true", help="the tiny teacher, one seed, a minute or two")
    p.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--configs", help=f"comma-separated, from {', '.join(Options.configs)}")
    p.add_argument("--thieves", help="comma-separated: passive, adaptive, adaptive_literal, verifier, logprob")
    p.add_argument("--steps", type=int)
    p.add_argument("--train-problems", type=int)
    p.add_argument("--eval-problems", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--shard", help="K/N: one of N worker processes, each taking the next (seed, config) no other "
                   "has claimed (run --prepare first, then N processes, then once more without --shard for the "
                   "table)")
    p.add_argument("--prepare", action="store_true", help="only the shared stages: the untrained student's "
                   "evaluation, the held-out traces and antidistillation's gradients")
    p.add_argument("--workers", type=int, default=2, help="processes (1 torch thread each) that share the cells: "
                   "the shared stages run first, then the workers, then the table (default 2, one per core here)")
    args = p.parse_args(argv)
    options = Options()
    if args.quick:
        options = quick_options(options)
    updates: dict[str, Any] = {}
    if args.out:
        updates["out"] = args.out
    for name in ("seeds",):
        if getattr(args, name):
            updates[name] = tuple(int(s) for s in getattr(args, name).split(","))
    for name in ("configs", "thieves"):
        if getattr(args, name):
            updates[name] = tuple(getattr(args, name).split(","))
    for name in ("steps", "train_problems", "eval_problems", "threads"):
        if getattr(args, name) is not None:
            updates[name] = getattr(args, name)
    if args.shard:
        k, n = (int(x) for x in args.shard.split("/"))
        if not 0 <= k < n:
            p.error("--shard K/N needs 0 <= K < N")
        updates["shard"] = (k, n)
    updates["prepare"] = args.prepare
    updates["workers"] = 1 if (args.shard or args.prepare) else max(1, args.workers)
    options = replace(options, **updates)
    unknown = [c for c in options.configs if c not in support.CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {', '.join(support.CONFIGS)}")
    return options


def run(options: Options) -> dict[str, Any]:
    import torch

    torch.set_num_threads(options.threads)
    began = time.perf_counter()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    game = support.Game(options)
    cells: list[dict[str, Any]] = []
    init_eval = game.evaluate_once("init", game.init_dir())
    support.emit({"kind": "eval", "model": "init", "accuracy": init_eval["accuracy"]})
    holdouts = {seed: game.holdout_traces(seed) for seed in options.seeds}
    if options.prepare:
        support.clear_claims(out)
        for seed in options.seeds:
            for config in options.configs:
                if support.CONFIGS[config]["defense"] == "antidistillation":
                    game.keyfile(seed, config, holdouts[seed])
        return {"prepared": True}
    # sharded, each process takes the next (seed, config) no other has claimed; a config that re-uses another's
    # samples (truncation) is left to the final unsharded pass, which reads its source's finished cells
    pairs = [(seed, config) for seed in options.seeds for config in options.configs
             if not (options.shard and support.CONFIGS[config].get("same_samples_as"))]
    for seed, config in pairs:
        if options.shard and not support.claim(out, seed, config):
            continue
        teacher_rows = game.teacher_rows(seed, config, holdouts[seed])
        for thief in options.thieves:
            if thief == "logprob" and config not in support.LOGPROB_CONFIGS:
                continue
            cell = game.cell(seed, config, thief, teacher_rows, holdouts[seed])
            cells.append(cell)
            support.emit({"kind": "cell", **{k: v for k, v in cell.items() if k != "eval_rows"}})
    if options.shard:
        return {"shard": list(options.shard), "cells": len(cells)}
    summary = support.summarize(options, init_eval, cells)
    summary.update({"options": json.loads(json.dumps({**asdict(options), "out": str(options.out)})),
                    "wall_s_this_invocation": round(time.perf_counter() - began, 1),
                    "provenance": support.provenance(options.threads)})
    support.write_outputs(out, summary)
    return summary


def run_workers(argv: list[str], options: Options) -> None:
    """The shared stages in this process, then `workers` shard processes side by side (each cell is stored as it
    finishes, so a worker killed and started again resumes); the table is made afterwards from the stored cells."""
    import subprocess

    run(replace(options, prepare=True))  # also clears a killed run's claims
    base = [sys.executable, __file__, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(options.threads)}
    procs = [subprocess.Popen([*base, "--shard", f"{k}/{options.workers}"], env=env) for k in range(options.workers)]
    failed = [k for k, proc in enumerate(procs) if proc.wait() != 0]
    if failed:
        raise SystemExit(f"defense game: worker(s) {failed} failed; run the same command again to resume")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse(argv)
    if options.workers > 1:
        run_workers(argv, options)
        options = replace(options, workers=1)
    summary = run(options)
    support.emit({k: v for k, v in summary.items() if k != "options"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
