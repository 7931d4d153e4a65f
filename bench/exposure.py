"""The exposure-bias experiment: off-policy forward KL, GKD, on-policy reverse KL, HPD and plain SFT, compared on
what exposure bias hurts, at equal steps and at equal training wall time, over several seeds.

    .venv/bin/python bench/exposure.py                 # the full experiment (~30 min on a quiet 2-core CPU)
    .venv/bin/python bench/exposure.py --quick         # smoke test on the tiny built-in teacher (< 1 min)
    .venv/bin/python bench/exposure.py --seeds 0,1 --steps 12 --methods sft,forward_kl,onpolicy

Sizes, measured at 1 torch thread on this 2-core CPU: the fixed part (teacher data ~1.3 min, warm start ~1.5 min,
the three reference evaluations ~2 min) is ~5 min; one seed of the five methods is ~8 min (training loop per step:
sft ~3.2 s, forward_kl / hpd ~5.5 s, gkd ~8.4 s, onpolicy ~9.5 s; each evaluation ~25 s; four extensions to
on-policy's wall time). So 3 seeds × 5 methods × 6 steps, 24 held-out prompts: ~30 min. Larger budgets (more steps,
prompts, a larger student) tighten the intervals in proportion to the time they cost.

Output: JSON lines on stdout (one per training run, one per evaluation, one summary line with the whole table),
progress on stderr, and `exposure.md` (the table, the paired differences and the claims checked) plus
`exposure.json` (the summary line) in --out (default runs/exposure/). Rerunning skips every finished stage (data,
runs, evaluations); a killed run resumes from its last checkpoint. Each run's checkpoint (~0.65 GB) is deleted once
both of its budgets are evaluated (`--keep-checkpoints` keeps it).

Design (the numbers are the defaults; see `Options`):
  task      reasoning-gym `basic_arithmetic` as in the reasoning demo (2 terms, 1-2 digits, + and -), chat prompts
            with the demo's system prompt. Training prompts: task seed 1,000; held-out: seed 5,000,000 (reasoning-
            gym draws item i from seed + i, so the ranges cannot meet), questions that also occur in training
            skipped.
  data      the teacher's own completions of the 128 training prompts, one per prompt, T 0.7, ≤ 64 new tokens
            (SmolLM2 answers in ~54 tokens), written once by
            `distill generate` (no verifier: every row is kept, so the data are samples of the teacher and forward
            KL on them is the teacher's own distribution; a verifier would keep ~1/4 of the rows and make SFT's data
            better than the teacher, which is another experiment). Held-out: the teacher's completions of the held-out
            prompts, same settings, for the held-out NLL.
  student   the teacher's layers 0-3 and 26-29 copied (8 of 30; 54M of 135M parameters, half of them the tied
            embedding). Every cut this small writes gibberish at first (teacher-forced NLL 9.7 nats/token on
            teacher text, against the teacher's 0.72), and on-policy methods cannot start from gibberish (the
            papers start from a fine-tuned student), so every method starts from one shared warm start: the copy
            after 32 steps of SFT on the same data (batch 8, lr 5e-4; seed 0). `--warm-steps 0` starts from the raw
            copy. Every cut was measured (8, 12, 16, 20 layers: NLL 9.7-3.7 at copy); the first and last layers
            kept is the least broken pattern at each size, and the student's share of each step's cost is small
            next to the teacher's forward pass, so the size is set by what 15 runs and 27 evaluations allow.
  methods   sft (seqkd, alpha 1: cross-entropy on the teacher's tokens, no teacher at training time), forward_kl
            (offpolicy, alpha 0), gkd (λ 0.5, JSD β 0.5, alpha 0), onpolicy (λ 1, sampled-token reverse KL), hpd
            (λ 0, one student-sampled token per position); optionally onpolicy_full (λ 1, full-vocabulary reverse
            KL). Same data, batch 8, AdamW, and a constant learning rate 1e-4 (warmup 0, min_lr_ratio 1), so a resume
            to a larger max_steps is exactly a longer run. Rollouts: T 1, top_p 1, max_new_tokens as the data.
  budgets   equal steps: every method 6 steps. Equal wall time: each method's training-loop time (the
            per-step times in its metrics.jsonl, model loading excluded; mean over seeds) is measured, and every
            cheaper method is extended by `--resume` to round(steps × T_max / T_method) steps, T_max the mean of
            the most expensive method; the achieved loop times are reported.
  metrics   on 24 held-out prompts, per model: (1) the student's own samples (T 1, `eval_samples` = 1 per prompt):
            the teacher's mean per-token log-likelihood of them, the reverse-KL estimate mean(log q − log p) over
            their tokens (q student, p teacher; unbiased for the per-token KL(q‖p) along the student's own
            trajectories), the mean per-token entropy of q along them, distinct-1/2 (unique word n-grams / word
            n-grams of the prompt's samples pooled: with one sample, repetition within it) and their length;
            (2) greedy answers: accuracy with the demo's verifier (`final_number`), and the teacher's
            log-likelihood of them; (3) held-out NLL: the student's per-token NLL of the teacher's held-out
            completions (a truncated one without the end-of-turn the chat template adds). Token metrics are
            ratios of sums over tokens (stop token included), not means of per-prompt means.
  intervals 95% percentile intervals of a hierarchical paired bootstrap: each replicate resamples the prompts
            (with replacement) and the seeds (with replacement), the same draws for every method; a method's value
            is the mean over its seeds of the per-seed metric. Differences vs forward_kl use the same draws, so
            they are paired over prompts and over seeds (seed s of every method shares the data order and the
            warm start). References (teacher, raw copy, warm start) are single models: prompts only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

SCHEMA = "distill.bench.exposure/1"
BASELINE = "forward_kl"
ROLLOUT_KINDS = ("gkd", "onpolicy", "hpd")
METHODS: dict[str, dict[str, Any]] = {
    "sft": {"kind": "seqkd", "alpha": 1.0},
    "forward_kl": {"kind": "offpolicy", "alpha": 0.0, "divergence": "forward_kl"},
    "gkd": {"kind": "gkd", "lmbda": 0.5, "divergence": "jsd", "beta": 0.5, "alpha": 0.0},
    "onpolicy": {"kind": "onpolicy", "lmbda": 1.0, "estimator": "sampled"},
    "onpolicy_full": {"kind": "onpolicy", "lmbda": 1.0, "estimator": "full"},
    "hpd": {"kind": "hpd", "lmbda": 0.0, "alpha": 0.0},
}
DEFAULT_METHODS = ("sft", "forward_kl", "gkd", "onpolicy", "hpd")
# metric -> (label, direction: +1 higher is better, -1 lower is better, 0 no direction)
METRICS: dict[str, tuple[str, int]] = {
    "teacher_ll_sample": ("teacher log-lik of own samples (nats/token)", +1),
    "rkl_sample": ("reverse KL estimate on own samples, mean(log q − log p)", -1),
    "teacher_ll_greedy": ("teacher log-lik of greedy answers", +1),
    "accuracy": ("greedy accuracy (final_number verifier)", +1),
    "heldout_nll": ("held-out NLL of teacher completions", -1),
    "distinct1": ("distinct-1 of samples", +1),
    "distinct2": ("distinct-2 of samples", +1),
    "entropy": ("student entropy along own samples (nats/token)", 0),
    "length": ("sample length (tokens)", 0),
}
SHORT = {"teacher_ll_sample": "teacher LL (sample)", "rkl_sample": "RKL est.", "teacher_ll_greedy":
         "teacher LL (greedy)", "accuracy": "accuracy", "heldout_nll": "held-out NLL", "distinct1": "dist-1",
         "distinct2": "dist-2", "entropy": "entropy", "length": "length"}


@dataclass
class Options:
    out: Path = Path("runs/exposure")
    teacher: str = "builtin:smollm2-135m-instruct"
    layers: tuple[int, ...] = (0, 1, 2, 3, 26, 27, 28, 29)
    train_seed: int = 1_000
    eval_seed: int = 5_000_000
    train_prompts: int = 128
    eval_prompts: int = 24
    gen_temperature: float = 0.7
    max_new_tokens: int = 64  # the teacher's data, the rollouts and the evaluation's generations
    max_length: int = 192
    warm_steps: int = 32
    warm_lr: float = 5e-4
    steps: int = 6
    batch_size: int = 8
    lr: float = 1e-4
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = DEFAULT_METHODS
    equal_time: bool = True
    eval_samples: int = 1  # samples per held-out prompt at T 1
    gen_batch_size: int = 64
    eval_batch_size: int = 32
    score_batch_size: int = 8
    bootstrap: int = 4000
    threads: int = 1
    keep_checkpoints: bool = False
    quick: bool = False

    def fingerprint(self) -> dict[str, Any]:
        """What decides every finished stage (methods, seeds and the bootstrap may change between reruns)."""
        out = asdict(self)
        for key in ("out", "seeds", "methods", "equal_time", "bootstrap", "threads", "gen_batch_size",
                    "eval_batch_size", "score_batch_size", "keep_checkpoints"):
            out.pop(key)
        out["layers"] = list(self.layers)
        return out


def quick_options(options: Options) -> Options:
    return replace(options, teacher="builtin:tiny-teacher", layers=(0, 3), train_prompts=16, eval_prompts=8,
                   max_new_tokens=16, max_length=448, warm_steps=2, warm_lr=1e-3, steps=2, batch_size=4, lr=1e-3,
                   seeds=options.seeds[:2], eval_samples=2, bootstrap=500, quick=True)


# ------------------------------------------------------------------------------------------------ output helpers
def log(message: str) -> None:
    print(f"[exposure {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Invocations:
    """The wall time of every invocation on this output folder (a resumed experiment's total is their sum): each one's
    start and its last sign of progress, rewritten at every progress line, so a killed one still counts."""

    def __init__(self, path: Path):
        self.path = path
        self.runs: list[dict[str, Any]] = read_json(path) or []
        now = time.time()
        self.runs.append({"start": now, "last": now})
        self.touch()

    def touch(self) -> None:
        self.runs[-1]["last"] = time.time()
        write_json(self.path, self.runs)

    def total_seconds(self) -> float:
        return sum(r["last"] - r["start"] for r in self.runs)


_INVOCATIONS: Invocations | None = None


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=False), flush=True)
    if _INVOCATIONS is not None:
        _INVOCATIONS.touch()


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The library prints progress to stdout; stdout here is JSON lines only."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def write_json(path: Path, data: Any) -> None:
    from distill.atomic import write_json as atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def provenance(threads: int) -> dict[str, Any]:
    import torch
    import transformers

    from distill import __version__

    return {"distill": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpus": os.cpu_count(), "torch_threads": threads,
            "machine": platform.machine(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def set_threads(requested: int) -> int:
    """Torch threads, fixed for the whole run so that wall times compare. The default is 1: on this shared 2-core
    machine another job can start at any time, and with 2 threads on 2 busy cores OpenMP's spin-waiting made
    generation 5-50x slower (measured here; docs/reasoning.md). 0 = the reasoning demo's rule: 1 when the load
    average is ≥ 0.5 at the start, else every CPU."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or (1 if os.getloadavg()[0] >= 0.5 else cpus)
    torch.set_num_threads(threads)
    return threads


# ------------------------------------------------------------------------------------------------------- data
def _generate_config(options: Options, output: Path, *, task: dict[str, Any] | None = None,
                     prompts: Path | None = None) -> Any:
    from distill.demo.reasoning_plan import SYSTEM
    from distill.recipe import validate_recipe
    from distill.recipe.schema import GenerationRecipe

    source: dict[str, Any] = {"task": task} if task is not None else {"prompts": str(prompts)}
    raw = {"teacher": {"model": options.teacher},
           "generate": {**source, "system": SYSTEM, "chat": True, "n": 1, "verifier": None, "dedup": None,
                        "sampling": {"temperature": options.gen_temperature, "top_p": 1.0,
                                     "max_new_tokens": options.max_new_tokens, "seed": 0},
                        "output": str(output), "batch_size": options.gen_batch_size}}
    return validate_recipe(raw, source="bench exposure generate recipe", schema=GenerationRecipe)


def _task(options: Options, seed: int, size: int) -> dict[str, Any]:
    from distill.demo.reasoning_plan import TASK, TASK_CONFIG

    return {"name": TASK, "size": size, "seed": seed, "config": dict(TASK_CONFIG)}


def _run_generation(recipe: Any, what: str) -> dict[str, Any]:
    from distill.generation.run import MANIFEST, run_generation

    manifest_path = Path(recipe.generate.output) / MANIFEST
    manifest = read_json(manifest_path)
    if manifest is not None and manifest.get("generate") == recipe.generate.model_dump(mode="json"):
        log(f"{what}: reusing {manifest_path.parent}")
        return manifest
    log(f"{what}: the teacher writes {recipe.generate.task.size if recipe.generate.task else 'the'} completions")
    started = time.perf_counter()
    with quiet_stdout():
        manifest = run_generation(recipe, overwrite=manifest is not None, progress=False)
    log(f"{what}: done in {time.perf_counter() - started:.0f} s")
    return manifest


def prepare_data(options: Options) -> dict[str, Any]:
    """The teacher's completions of the training prompts (train.jsonl), the held-out prompts (heldout.jsonl) and the
    teacher's completions of them (heldout/samples.jsonl)."""
    from distill.atomic import read_jsonl, write_jsonl
    from distill.demo.reasoning_plan import VERIFIER
    from distill.generation.prompts import load_prompts
    from distill.generation.run import SAMPLES, TRAIN
    from distill.generation.verifiers import build_verifier

    if options.train_seed + options.train_prompts > options.eval_seed:
        raise SystemExit("bench exposure: the training and held-out task seeds overlap (item i is seed + i)")
    folder = options.out / "data"
    train_recipe = _generate_config(options, folder / "train",
                                    task=_task(options, options.train_seed, options.train_prompts))
    started = time.perf_counter()
    train_manifest = _run_generation(train_recipe, "data: training completions")
    train_rows = read_jsonl(folder / "train" / TRAIN)
    # held-out prompts: another task seed, questions seen in training skipped (1-2 digit operands repeat questions)
    seen = {p.record["prompt"] for p in load_prompts(train_recipe.generate)}
    heldout_path = folder / "heldout.jsonl"
    if not heldout_path.exists():
        size = options.eval_prompts
        while True:
            pool = load_prompts(_generate_config(options, folder / "unused",
                                                 task=_task(options, options.eval_seed, size)).generate)
            fresh = [p.record for p in pool if p.record["prompt"] not in seen]
            if len(fresh) >= options.eval_prompts or size > 20 * options.eval_prompts:
                break
            size *= 2
        if len(fresh) < options.eval_prompts:
            raise SystemExit(f"bench exposure: only {len(fresh)} held-out questions differ from the training ones")
        write_jsonl(heldout_path, fresh[: options.eval_prompts])
    heldout_recipe = _generate_config(options, folder / "heldout", prompts=heldout_path)
    _run_generation(heldout_recipe, "data: held-out teacher completions")
    heldout_samples = read_jsonl(folder / "heldout" / SAMPLES)
    # how often the teacher's training samples are right (they are all kept; this only describes them)
    records = {p.id: p.record for p in load_prompts(train_recipe.generate)}
    verify = build_verifier(VERIFIER)
    samples = read_jsonl(folder / "train" / SAMPLES)
    right = sum(verify(records[r["prompt_id"]], r["messages"][-1]["content"]).accepted for r in samples)
    info = {"train_rows": len(train_rows), "train_rows_correct": right,
            "train_finish_reasons": train_manifest.get("finish_reasons"),
            "heldout_prompts": len(read_jsonl(heldout_path)), "heldout_completions": len(heldout_samples),
            "seconds": round(time.perf_counter() - started, 1)}
    return {"train": folder / "train" / TRAIN, "heldout_recipe": heldout_recipe, "heldout_samples": heldout_samples,
            "info": info}


# --------------------------------------------------------------------------------------------------- training
def base_recipe(options: Options, data: Path, output: Path, *, seed: int, steps: int, lr: float,
                objective: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": seed,
        "teacher": {"model": options.teacher},
        "student": student,
        "data": {"train": str(data), "format": "messages", "max_length": options.max_length},
        "objective": objective,
        "training": {"output_dir": str(output), "max_steps": steps, "batch_size": options.batch_size,
                     "micro_batch_size": options.batch_size, "lr": lr, "warmup_steps": 0, "min_lr_ratio": 1.0,
                     "save_every": steps, "keep_checkpoints": 1, "log_every": 1},
    }


def method_objective(options: Options, method: str) -> dict[str, Any]:
    objective = dict(METHODS[method])
    if objective["kind"] in ROLLOUT_KINDS:
        objective["rollout"] = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": options.max_new_tokens}
    return objective


def loop_seconds(run_dir: Path, first: int = 1, last: int | None = None) -> float:
    """Seconds the training loop spent on steps first..last, from metrics.jsonl (log_every 1: each line's window is
    one step, its time = the step's tokens / tokens_per_s). Model loading and set-up are not in it."""
    seconds, previous = 0.0, 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        tokens = row["tokens_seen"] - previous
        previous = row["tokens_seen"]
        if row["step"] >= first and (last is None or row["step"] <= last):
            seconds += tokens / row["tokens_per_s"]
    return seconds


def train_to(raw: dict[str, Any], source: str) -> float:
    """Train (or resume, or extend) the run; returns the call's wall seconds."""
    from distill.recipe import validate_recipe
    from distill.training.loop import train

    recipe = validate_recipe(raw, source=source)
    started = time.perf_counter()
    with quiet_stdout():
        train(recipe, resume=True)
    return time.perf_counter() - started


def trained_steps(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not (run_dir / "student" / "config.json").exists() or not metrics.exists():
        return 0
    lines = metrics.read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def warm_start(options: Options, data: Path) -> Path | None:
    """SFT of the raw copy for warm_steps (seed 0): the shared start of every method; None without one."""
    if options.warm_steps == 0:
        return None
    run_dir = options.out / "warm"
    if trained_steps(run_dir) == options.warm_steps:
        log(f"warm start: reusing {run_dir / 'student'}")
        return run_dir / "student"
    raw = base_recipe(options, data, run_dir, seed=0, steps=options.warm_steps, lr=options.warm_lr,
                      objective=dict(METHODS["sft"]), student={"from_teacher": {"layers": list(options.layers)}})
    log(f"warm start: SFT of the copied student, {options.warm_steps} steps")
    seconds = train_to(raw, "bench exposure warm start")
    log(f"warm start: done in {seconds:.0f} s")
    if not options.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return run_dir / "student"


def init_copy(options: Options, data: Path) -> Path:
    """The copied student before any training (the demo's helper)."""
    from distill.demo.pipeline import copied_student
    from distill.recipe import validate_recipe

    raw = base_recipe(options, data, options.out / "unused-run", seed=0, steps=1, lr=options.lr,
                      objective=dict(METHODS["sft"]), student={"from_teacher": {"layers": list(options.layers)}})
    with quiet_stdout():
        return copied_student(validate_recipe(raw, source="bench exposure copy"), options.out / "init")


# ------------------------------------------------------------------------------------------------- evaluation
@dataclass
class Evaluator:
    """Holds the teacher, its tokenizer, the held-out prompts and the teacher's held-out completions."""

    options: Options
    prompts: list[Any]
    heldout_completions: dict[int, tuple[list[int], list[int]]]  # prompt id -> (prompt, completion) as trained
    teacher: Any = None
    tokenizer: Any = None
    prompt_ids: list[list[int]] = field(default_factory=list)

    @classmethod
    def build(cls, options: Options, heldout_recipe: Any, heldout_samples: list[dict[str, Any]]) -> Evaluator:
        import torch

        from distill.data.formatting import IGNORE_INDEX, encode_messages
        from distill.eval.generation import stop_token_ids
        from distill.generation.prompts import load_prompts, prompt_ids
        from distill.models import load_causal_lm, load_tokenizer
        from distill.training.student_samples import prompt_of

        tokenizer = load_tokenizer("teacher.model", options.teacher)
        teacher = load_causal_lm("teacher.model", options.teacher, None, False, torch.float32)
        teacher.eval()
        teacher.requires_grad_(False)
        teacher._exposure_tokens = len(tokenizer)
        prompts = load_prompts(heldout_recipe.generate)
        ids = [prompt_ids(p, tokenizer) for p in prompts]
        stops = set(stop_token_ids(teacher, tokenizer))
        completions = {}
        for row in heldout_samples:  # tokenized exactly as training tokenizes a chat row: the assistant's tokens
            example = encode_messages({"messages": row["messages"]}, tokenizer, "held-out sample")
            labels = [t for t in example.labels if t != IGNORE_INDEX]
            if row["finish_reason"] == "length":  # the template closes the turn; the teacher did not: not scored
                ends = [j for j, t in enumerate(labels) if t in stops]
                labels = labels[:ends[0]] if ends else labels
            completions[row["prompt_id"]] = (prompt_of(example), labels)
        return cls(options, prompts, completions, teacher, tokenizer, ids)

    def evaluate(self, model_path: Path | str, name: str, path: Path) -> dict[str, Any]:
        """Every metric's per-prompt (numerator, denominator) columns for the model; cached in `path`."""
        cached = read_json(path)
        if cached is not None:
            log(f"eval {name}: reusing {path}")
            return cached
        import torch

        from distill.demo.reasoning_plan import VERIFIER
        from distill.generation.engine import Engine, GenRequest
        from distill.generation.sampling import SamplingParams
        from distill.generation.verifiers import build_verifier
        from distill.models import load_causal_lm

        started = time.perf_counter()
        is_teacher = str(model_path) == self.options.teacher
        model = self.teacher if is_teacher else load_causal_lm("student", str(model_path), None, False,
                                                                 torch.float32)
        model.eval()
        model._exposure_tokens = len(self.tokenizer)
        engine = Engine(model, self.tokenizer, max_batch_size=self.options.eval_batch_size)
        k, new = self.options.eval_samples, self.options.max_new_tokens
        sampled = engine.generate([GenRequest(ids, SamplingParams(temperature=1.0, max_new_tokens=new),
                                              (7919, p.id, j))
                                   for p, ids in zip(self.prompts, self.prompt_ids, strict=True) for j in range(k)])
        greedy = engine.generate([GenRequest(ids, SamplingParams(temperature=0.0, max_new_tokens=new), (7919, p.id, 0))
                                  for p, ids in zip(self.prompts, self.prompt_ids, strict=True)])
        gen_seconds = time.perf_counter() - started

        def completion(result: Any) -> list[int]:
            return result.token_ids + ([result.stop_token_id] if result.stop_token_id is not None else [])

        n = len(self.prompts)
        sample_seqs = [(self.prompt_ids[i // k], completion(r)) for i, r in enumerate(sampled)]
        greedy_seqs = [(self.prompt_ids[i], completion(r)) for i, r in enumerate(greedy)]
        heldout_seqs = [self.heldout_completions[p.id] for p in self.prompts]
        t_sample = score(self.teacher, sample_seqs, self.options.score_batch_size)
        q_sample = score(model, sample_seqs, self.options.score_batch_size, entropy=True)
        t_greedy = score(self.teacher, greedy_seqs, self.options.score_batch_size)
        q_heldout = score(model, heldout_seqs, self.options.score_batch_size)
        verify = build_verifier(VERIFIER)
        cols: dict[str, list[list[float]]] = {m: [[0.0, 0.0] for _ in range(n)] for m in METRICS}

        def add(metric: str, i: int, num: float, den: float) -> None:
            cols[metric][i][0] += float(num)
            cols[metric][i][1] += float(den)

        words: list[list[list[str]]] = [[] for _ in range(n)]
        for j, result in enumerate(sampled):
            i = j // k
            lp, (lq, ent) = t_sample[j], q_sample[j]
            add("teacher_ll_sample", i, lp.sum(), len(lp))
            add("rkl_sample", i, (lq - lp).sum(), len(lp))
            add("entropy", i, ent.sum(), len(lp))
            add("length", i, len(lp), 1)
            words[i].append(result.text.split())
        for i in range(n):
            for size, metric in ((1, "distinct1"), (2, "distinct2")):
                grams = [tuple(w[t:t + size]) for w in words[i] for t in range(len(w) - size + 1)]
                add(metric, i, len(set(grams)), len(grams))
        answers = []
        for i, (prompt, result) in enumerate(zip(self.prompts, greedy, strict=True)):
            verdict = verify(prompt.record, result.text)
            add("accuracy", i, float(verdict.accepted), 1)
            add("teacher_ll_greedy", i, t_greedy[i].sum(), len(t_greedy[i]))
            add("heldout_nll", i, -q_heldout[i].sum(), len(q_heldout[i]))
            answers.append({"id": prompt.id, "question": prompt.record["prompt"], "answer": prompt.record["answer"],
                            "greedy": result.text, "correct": verdict.accepted, "sample": sampled[i * k].text})
        result = {"name": name, "model": str(model_path), "columns": cols, "answers": answers,
                  "seconds": round(time.perf_counter() - started, 1), "generation_seconds": round(gen_seconds, 1)}
        write_json(path, result)
        if not is_teacher:
            del model
        return result


def score(model: Any, seqs: list[tuple[list[int], list[int]]], batch_size: int, entropy: bool = False) -> list[Any]:
    """Per sequence, the model's log-prob of each completion token given what precedes it (numpy), and with
    `entropy` also the entropy of its next-token distribution at those positions. Right-padded batches; the LM head
    runs only at the positions that predict a completion token (half the positions here are the prompt's), and
    logits past the tokenizer's ids are masked, as the engine does when it samples."""
    import torch

    out: list[Any] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -(len(seqs[i][0]) + len(seqs[i][1])))
    body, head = getattr(model, model.base_model_prefix), model.get_output_embeddings()
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            rows = [i for i in order[first:first + batch_size] if seqs[i][1]]
            for i in order[first:first + batch_size]:
                if not seqs[i][1]:
                    out[i] = (np.zeros(0), np.zeros(0)) if entropy else np.zeros(0)
            if not rows:
                continue
            width = max(len(seqs[i][0]) + len(seqs[i][1]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for b, i in enumerate(rows):
                tokens = seqs[i][0] + seqs[i][1]
                ids[b, :len(tokens)] = torch.tensor(tokens)
                mask[b, :len(tokens)] = 1
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            spans = [(len(seqs[i][0]) - 1, len(seqs[i][0]) + len(seqs[i][1]) - 1) for i in rows]
            picked_hidden = torch.cat([hidden[b, lo:hi] for b, (lo, hi) in enumerate(spans)])
            logits = head(picked_hidden).float()
            if logits.shape[-1] > model_tokens(model):
                logits[:, model_tokens(model):] = float("-inf")
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor([t for i in rows for t in seqs[i][1]])
            picked = logprobs.gather(-1, targets[:, None])[:, 0].double().numpy()
            ent = (-(logprobs.exp() * logprobs.clamp_min(-1e30)).sum(-1).double().numpy() if entropy else None)
            start = 0
            for i in rows:
                end = start + len(seqs[i][1])
                out[i] = (picked[start:end], ent[start:end]) if entropy else picked[start:end]
                start = end
    return out


def model_tokens(model: Any) -> int:
    """The ids the tokenizer can produce (set on the model by the evaluator); the vocabulary when unset."""
    return getattr(model, "_exposure_tokens", model.config.vocab_size)


# ------------------------------------------------------------------------------------------------- statistics
def metric_arrays(evaluation: dict[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray]:
    cols = np.asarray(evaluation["columns"][metric], dtype=np.float64)
    return cols[:, 0], cols[:, 1]


class Bootstrap:
    """Hierarchical paired bootstrap: `b` replicates of (prompt counts, seed picks), shared by every model."""

    def __init__(self, n_prompts: int, n_seeds: int, b: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.counts = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=b).astype(np.float64)
        self.picks = rng.integers(0, n_seeds, size=(b, n_seeds))

    def replicates(self, per_seed: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray]:
        """Point value (mean over seeds of the full-sample ratio) and its bootstrap replicates. One entry = a
        single model (the seed draw is then irrelevant)."""
        point = float(np.mean([num.sum() / den.sum() for num, den in per_seed]))
        ratios = np.stack([(self.counts @ num) / np.where(self.counts @ den > 0, self.counts @ den, np.nan)
                           for num, den in per_seed], axis=1)  # (b, seeds)
        if len(per_seed) == 1:
            return point, ratios[:, 0]
        picks = self.picks if self.picks.shape[1] == len(per_seed) else self.picks[:, :len(per_seed)] % len(
            per_seed)
        return point, np.nanmean(np.take_along_axis(ratios, picks, axis=1), axis=1)


def interval(point: float, reps: np.ndarray) -> dict[str, float]:
    reps = reps[np.isfinite(reps)]
    low, high = (np.percentile(reps, [2.5, 97.5]) if len(reps) else (math.nan, math.nan))
    return {"mean": point, "ci_low": float(low), "ci_high": float(high)}


def fmt(value: dict[str, float], signed: bool = False) -> str:
    width = value["ci_high"] - value["ci_low"]
    decimals = 3 if not math.isfinite(width) or width <= 0 else min(max(1 - math.floor(math.log10(width)), 0), 4)
    sign = "+" if signed else ""
    return (f"{value['mean']:{sign}.{decimals}f} [{value['ci_low']:{sign}.{decimals}f}, "
            f"{value['ci_high']:{sign}.{decimals}f}]")


# --------------------------------------------------------------------------------------------------- pipeline
def run(options: Options) -> dict[str, Any]:
    global _INVOCATIONS
    began = time.perf_counter()
    threads = set_threads(options.threads)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"bench exposure: unknown methods {unknown}; choose from {sorted(METHODS)}")
    config_path = out / "config.json"
    saved = read_json(config_path)
    if saved is not None and saved != options.fingerprint():
        changed = sorted(k for k in set(saved) | set(options.fingerprint())
                         if saved.get(k) != options.fingerprint().get(k))
        raise SystemExit(f"bench exposure: {out} was made with other settings ({', '.join(changed)}); use another "
                         "--out, or delete it")
    write_json(config_path, options.fingerprint())
    _INVOCATIONS = Invocations(out / "invocations.json")
    log(f"out {out}; {threads} torch thread(s); methods {', '.join(options.methods)}; seeds "
        f"{', '.join(map(str, options.seeds))}; {options.steps} steps × batch {options.batch_size}")

    data = prepare_data(options)
    init_dir = init_copy(options, data["train"])
    warm_dir = warm_start(options, data["train"])
    student = {"model": str(warm_dir)} if warm_dir else {"from_teacher": {"layers": list(options.layers)}}
    evaluator = Evaluator.build(options, data["heldout_recipe"], data["heldout_samples"])
    evals = out / "eval"
    references = {"teacher": evaluator.evaluate(options.teacher, "teacher", evals / "teacher.json"),
                  "init": evaluator.evaluate(init_dir, "init", evals / "init.json")}
    if warm_dir:
        references["warm"] = evaluator.evaluate(warm_dir, "warm", evals / "warm.json")
    for name, ev in references.items():
        emit({"kind": "eval", "model": name, "stage": "reference", "seconds": ev["seconds"],
              **{m: _plain(ev, m) for m in METRICS}})

    # --- equal steps
    records: dict[tuple[str, int], dict[str, Any]] = {}
    results: dict[str, dict[tuple[str, int], dict[str, Any]]] = {"steps": {}, "time": {}}
    for seed in options.seeds:
        for method in options.methods:
            name = f"{method}-s{seed}"
            run_dir = out / "runs" / name
            record_path = out / "records" / f"{name}.json"
            record = read_json(record_path)
            if record is None:
                if trained_steps(run_dir) > options.steps:
                    raise SystemExit(f"bench exposure: {run_dir} is past {options.steps} steps but has no record; "
                                     "delete it")
                log(f"train {name}: {options.steps} steps")
                raw = base_recipe(options, data["train"], run_dir, seed=seed, steps=options.steps, lr=options.lr,
                                  objective=method_objective(options, method), student=student)
                call = train_to(raw, f"bench exposure {name}")
                record = {"method": method, "seed": seed, "steps": options.steps, "call_seconds": round(call, 1),
                          "loop_seconds": round(loop_seconds(run_dir, 1, options.steps), 2)}
                write_json(record_path, record)
                log(f"train {name}: loop {record['loop_seconds']:.0f} s (call {call:.0f} s)")
            records[(method, seed)] = record
            emit({"kind": "train", "run": name, "stage": "steps", **record})
            path = evals / f"{name}@steps.json"
            if not path.exists() and trained_steps(run_dir) != options.steps:
                raise SystemExit(f"bench exposure: {run_dir} was extended before its equal-steps evaluation was "
                                 f"written ({path}); delete the run to redo it")
            ev = evaluator.evaluate(run_dir / "student", f"{name}@steps", path)
            results["steps"][(method, seed)] = ev
            emit({"kind": "eval", "model": name, "stage": "steps", "seconds": ev["seconds"],
                  **{m: _plain(ev, m) for m in METRICS}})

    # --- equal wall time: extend the cheaper methods to the most expensive one's mean loop time
    per_method = {m: float(np.mean([records[(m, s)]["loop_seconds"] for s in options.seeds])) for m in options.methods}
    target_method = max(per_method, key=per_method.get)
    plan = {m: max(options.steps, round(options.steps * per_method[target_method] / per_method[m]))
            for m in options.methods}
    time_plan = {"target_method": target_method, "target_loop_seconds": round(per_method[target_method], 2),
                 "steps_loop_seconds": {m: round(v, 2) for m, v in per_method.items()}, "steps": plan}
    write_json(out / "time-plan.json", time_plan)
    emit({"kind": "time_plan", **time_plan})
    if options.equal_time:
        for seed in options.seeds:
            for method in options.methods:
                name = f"{method}-s{seed}"
                run_dir = out / "runs" / name
                record = records[(method, seed)]
                want = plan[method]
                if want == options.steps:
                    ev = results["steps"][(method, seed)]
                    record = {**record, "time_steps": want, "time_loop_seconds": record["loop_seconds"]}
                else:
                    done = trained_steps(run_dir)
                    if record.get("time_steps") != want:
                        if done > want:
                            log(f"extend {name}: already at {done} steps, more than the plan's {want}; kept")
                            want = done
                        elif done < want:
                            if not (run_dir / "checkpoints").exists():
                                raise SystemExit(f"bench exposure: {name} must be extended to {want} steps but its "
                                                 "checkpoints were pruned; delete the run to redo it")
                            log(f"extend {name}: {options.steps} -> {want} steps")
                            raw = base_recipe(options, data["train"], run_dir, seed=seed, steps=want, lr=options.lr,
                                              objective=method_objective(options, method), student=student)
                            train_to(raw, f"bench exposure {name} extended")
                        record = {**record, "time_steps": want,
                                  "time_loop_seconds": round(loop_seconds(run_dir, 1, want), 2)}
                        write_json(out / "records" / f"{name}.json", record)
                        (evals / f"{name}@time.json").unlink(missing_ok=True)
                    ev = evaluator.evaluate(run_dir / "student", f"{name}@time", evals / f"{name}@time.json")
                if not options.keep_checkpoints:  # ~0.65 GB a run (weights + AdamW state); both budgets are done
                    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                records[(method, seed)] = record
                results["time"][(method, seed)] = ev
                emit({"kind": "train", "run": name, "stage": "time", **record})
                emit({"kind": "eval", "model": name, "stage": "time", "seconds": ev["seconds"],
                      **{m: _plain(ev, m) for m in METRICS}})

    summary = summarize(options, references, results, records, time_plan, data["info"])
    summary["wall_seconds_this_invocation"] = round(time.perf_counter() - began, 1)
    _INVOCATIONS.touch()
    summary["wall_seconds"] = round(_INVOCATIONS.total_seconds(), 1)
    summary["invocations"] = len(_INVOCATIONS.runs)
    summary["provenance"] = provenance(threads)
    summary["options"] = {**options.fingerprint(), "seeds": list(options.seeds), "methods": list(options.methods)}
    write_json(out / "exposure.json", summary)
    (out / "exposure.md").write_text(markdown(summary))
    emit(summary)
    log(f"done in {summary['wall_seconds'] / 60:.1f} min; table in {out / 'exposure.md'}")
    return summary


def _plain(evaluation: dict[str, Any], metric: str) -> float:
    num, den = metric_arrays(evaluation, metric)
    return round(float(num.sum() / den.sum()), 4) if den.sum() > 0 else math.nan


def summarize(options: Options, references: dict[str, Any], results: dict[str, dict[tuple[str, int], Any]],
              records: dict[tuple[str, int], dict[str, Any]], time_plan: dict[str, Any],
              info: dict[str, Any]) -> dict[str, Any]:
    n_prompts = len(next(iter(references.values()))["answers"])
    seeds = list(options.seeds)
    boot = Bootstrap(n_prompts, len(seeds), options.bootstrap)
    table: dict[str, Any] = {"reference": {}, "steps": {}, "time": {}}
    diffs: dict[str, Any] = {"steps": {}, "time": {}}
    for name, ev in references.items():
        table["reference"][name] = {m: interval(*boot.replicates([metric_arrays(ev, m)])) for m in METRICS}
    for stage in ("steps", "time"):
        if not results[stage]:
            continue
        reps: dict[str, dict[str, np.ndarray]] = {}
        for method in options.methods:
            row, reps[method] = {}, {}
            for metric in METRICS:
                point, r = boot.replicates([metric_arrays(results[stage][(method, s)], metric) for s in seeds])
                row[metric] = interval(point, r)
                reps[method][metric] = r
            key = "time_steps" if stage == "time" else "steps"
            walls = [records[(method, s)]["time_loop_seconds" if stage == "time" else "loop_seconds"] for s in seeds]
            row["train_steps"] = records[(method, seeds[0])].get(key, options.steps)
            row["loop_seconds"] = round(float(np.mean(walls)), 1)
            table[stage][method] = row
        points = {m: {metric: table[stage][m][metric]["mean"] for metric in METRICS} for m in options.methods}
        pairs: dict[str, Any] = {}
        for a in options.methods:
            for b in options.methods:
                if a == b:
                    continue
                pairs[f"{a}-{b}"] = {metric: interval(points[a][metric] - points[b][metric],
                                                      reps[a][metric] - reps[b][metric]) for metric in METRICS}
        diffs[stage] = pairs
    summary = {"kind": "summary", "schema": SCHEMA, "baseline": BASELINE, "seeds": seeds, "heldout_prompts": n_prompts,
               "data": info, "time_plan": time_plan, "metrics": {m: {"label": lbl, "direction": d}
                                                                  for m, (lbl, d) in METRICS.items()},
               "table": table, "differences": diffs}
    summary["winners"] = winners(summary, options.methods)
    summary["claims"] = claims(summary, options.methods)
    return summary


def winners(summary: dict[str, Any], methods: tuple[str, ...]) -> dict[str, Any]:
    """Per stage and metric with a direction: the best method by its point value, and the methods its paired
    difference interval does not separate it from (a clear win when that list is empty)."""
    out: dict[str, Any] = {}
    for stage in ("steps", "time"):
        if not summary["table"][stage]:
            continue
        out[stage] = {}
        for metric, (_, direction) in METRICS.items():
            if direction == 0:
                continue
            best = max(methods, key=lambda m: direction * summary["table"][stage][m][metric]["mean"])
            tied = [m for m in methods if m != best
                    and _excludes(summary["differences"][stage][f"{best}-{m}"][metric], direction) is not True]
            out[stage][metric] = {"best": best, "not_separated_from": tied}
    return out


def _excludes(diff: dict[str, float], direction: int) -> bool | None:
    """True: the interval lies on the side `direction` says is better; False: on the other side; None: spans 0."""
    if diff["ci_low"] > 0:
        return direction > 0
    if diff["ci_high"] < 0:
        return direction < 0
    return None


CLAIMS = [
    # (claim, method a, method b, metric, sign expected of a − b)
    ("On-policy training raises the teacher's likelihood of the student's own samples over off-policy forward KL "
     "(GKD, Agarwal et al. 2024; on-policy distillation)", "gkd", BASELINE, "teacher_ll_sample", +1),
    ("", "onpolicy", BASELINE, "teacher_ll_sample", +1),
    ("On-policy training lowers the reverse KL along the student's own samples (what it optimizes)", "gkd",
     BASELINE, "rkl_sample", -1),
    ("", "onpolicy", BASELINE, "rkl_sample", -1),
    ("On-policy training improves task accuracy (GKD on GSM8K; on-policy distillation on reasoning)", "gkd",
     BASELINE, "accuracy", +1),
    ("", "onpolicy", BASELINE, "accuracy", +1),
    ("Reverse KL is mode-seeking: on-policy students are less diverse (lower entropy, distinct-n)", "onpolicy",
     BASELINE, "entropy", -1),
    ("", "onpolicy", BASELINE, "distinct2", -1),
    ("Forward KL fits the teacher's own text best (lowest held-out NLL; mode-covering)", "onpolicy", BASELINE,
     "heldout_nll", +1),
    ("", "gkd", BASELINE, "heldout_nll", +1),
    ("Logit KD beats plain SFT on the teacher's samples (Hinton et al. 2015; Kim & Rush 2016)", BASELINE, "sft",
     "heldout_nll", -1),
    ("", BASELINE, "sft", "teacher_ll_sample", +1),
    ("HPD beats forward KL on the student's own samples and on-policy RKL on the teacher's text, and is at least "
     "as good as either where that one is strong (Zhu et al. 2026)", "hpd", BASELINE, "teacher_ll_sample", +1),
    ("", "hpd", "onpolicy", "heldout_nll", -1),
    ("", "hpd", BASELINE, "heldout_nll", -1),
    ("", "hpd", "onpolicy", "teacher_ll_sample", +1),
    ("", "hpd", BASELINE, "accuracy", +1),
]


def claims(summary: dict[str, Any], methods: tuple[str, ...]) -> list[dict[str, Any]]:
    out, current = [], ""
    for text, a, b, metric, sign in CLAIMS:
        current = text or current
        first = bool(text)
        if a not in methods or b not in methods:
            continue
        verdicts = {}
        for stage in ("steps", "time"):
            if stage not in summary["differences"] or not summary["differences"][stage]:
                continue
            diff = summary["differences"][stage][f"{a}-{b}"][metric]
            side = _excludes(diff, sign)
            verdicts[stage] = {"difference": diff, "verdict": {True: "reproduced", False: "contradicted",
                                                               None: "not separated"}[side]}
        out.append({"claim": current, "first": first, "a": a, "b": b, "metric": metric, "expected_sign": sign,
                    **verdicts})
    return out


def markdown(summary: dict[str, Any]) -> str:
    table, plan = summary["table"], summary["time_plan"]
    opts = summary["options"]
    lines = ["# Exposure bias: off-policy vs on-policy distillation", "",
             f"Teacher `{opts['teacher']}`; student: layers {opts['layers']} copied"
             + (f", warm-started by {opts['warm_steps']} SFT steps (lr {opts['warm_lr']:g})" if opts["warm_steps"]
                else "") + f"; {summary['data']['train_rows']} training rows (the teacher's samples, T "
             f"{opts['gen_temperature']}); {summary['heldout_prompts']} held-out prompts × {opts['eval_samples']} "
             f"samples (T 1) + greedy; seeds {summary['seeds']}; batch {opts['batch_size']}, constant lr "
             f"{opts['lr']:g}. Wall time {summary['wall_seconds'] / 60:.1f} min over {summary['invocations']} "
             f"invocation(s) (this one {summary['wall_seconds_this_invocation'] / 60:.1f} min; "
             f"{summary['provenance']['torch_threads']} torch thread(s), load average at its start "
             f"{summary['provenance']['loadavg_at_start'][0]}).", "",
             "95% intervals: hierarchical paired bootstrap (prompts and seeds resampled, the same draws for every "
             "method); a method's value is the mean over seeds. ↑ higher is better, ↓ lower is better.", ""]
    metrics = list(METRICS)
    arrows = {+1: " ↑", -1: " ↓", 0: ""}
    header = "| model | steps | loop s | " + " | ".join(SHORT[m] + arrows[METRICS[m][1]] for m in metrics) + " |"
    rule = "|" + "---|" * (len(metrics) + 3)
    lines += ["## References", "", header, rule]
    for name, row in table["reference"].items():
        lines.append(f"| {name} | – | – | " + " | ".join(fmt(row[m]) for m in metrics) + " |")
    for stage, title in (("steps", f"Equal steps ({opts['steps']} steps)"),
                         ("time", f"Equal training wall time (≈ {plan['target_loop_seconds']:.0f} s of training "
                                  f"loop, the mean of `{plan['target_method']}` at {opts['steps']} steps)")):
        if not table.get(stage):
            continue
        lines += ["", f"## {title}", "", header, rule]
        for method, row in table[stage].items():
            lines.append(f"| {method} | {row['train_steps']} | {row['loop_seconds']:.0f} | "
                         + " | ".join(fmt(row[m]) for m in metrics) + " |")
        lines += ["", f"Differences vs `{BASELINE}` (paired):", "",
                  "| method − " + BASELINE + " | " + " | ".join(SHORT[m] for m in metrics) + " |",
                  "|" + "---|" * (len(metrics) + 1)]
        for method in table[stage]:
            if method == BASELINE:
                continue
            d = summary["differences"][stage][f"{method}-{BASELINE}"]
            lines.append(f"| {method} | " + " | ".join(fmt(d[m], signed=True) for m in metrics) + " |")
        lines += ["", "Winners (best point value; ties = methods the paired interval does not separate it from):",
                  ""]
        for metric, w in summary["winners"][stage].items():
            tied = ", ".join(w["not_separated_from"]) or "none: a clear win"
            lines.append(f"- {SHORT[metric]}: **{w['best']}** (not separated from: {tied})")
    lines += ["", "## Claims from the papers", "", "| claim | comparison | equal steps | equal wall time |",
              "|---|---|---|---|"]
    shown: list[str] = []
    for c in summary["claims"]:
        cells = []
        for stage in ("steps", "time"):
            if stage in c:
                cells.append(f"{c[stage]['verdict']}: {fmt(c[stage]['difference'], signed=True)}")
            else:
                cells.append("–")
        sign = "> 0" if c["expected_sign"] > 0 else "< 0"
        claim = c["claim"] if c["first"] or not shown or shown[-1] != c["claim"] else "〃"
        shown.append(c["claim"])
        lines.append(f"| {claim} | {c['a']} − {c['b']}, {SHORT[c['metric']]} {sign} | {cells[0]} | {cells[1]} |")
    lines += ["", "Metrics: " + "; ".join(f"{SHORT[m]} = {lbl}" for m, (lbl, _) in METRICS.items()) + ".", ""]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/exposure, "
                        "runs/exposure-quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke test: the tiny built-in teacher, tiny sizes")
    parser.add_argument("--seeds", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--steps", type=int, help="equal-steps budget")
    parser.add_argument("--methods", help=f"comma-separated, from {', '.join(METHODS)} (default "
                        f"{','.join(DEFAULT_METHODS)})")
    parser.add_argument("--warm-steps", type=int, help="SFT steps of the shared warm start (0 = the raw copy)")
    parser.add_argument("--train-prompts", type=int)
    parser.add_argument("--eval-prompts", type=int)
    parser.add_argument("--eval-samples", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--layers", help="comma-separated teacher layers to copy")
    parser.add_argument("--no-equal-time", action="store_true", help="skip the equal-wall-time extension")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's last checkpoint (~0.65 GB "
                        "each) after both budgets are evaluated, e.g. to extend the runs later")
    parser.add_argument("--threads", type=int, help="torch threads (default 1; 0 = 1 on a busy machine, else all "
                        "CPUs; 2 is ~1.7x faster on an idle 2-core machine and many times slower on a busy one)")
    args = parser.parse_args(argv)
    options = Options()
    if args.seeds:
        options = replace(options, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.quick:
        options = quick_options(options)
    updates: dict[str, Any] = {"out": args.out or (Path("runs/exposure-quick") if args.quick else options.out),
                               "equal_time": not args.no_equal_time, "keep_checkpoints": args.keep_checkpoints,
                               "threads": options.threads if args.threads is None else args.threads}
    for key in ("steps", "warm_steps", "train_prompts", "eval_prompts", "eval_samples", "max_new_tokens",
                "batch_size", "lr"):
        if getattr(args, key) is not None:
            updates[key] = getattr(args, key)
    if args.methods:
        updates["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.layers:
        updates["layers"] = tuple(int(x) for x in args.layers.split(","))
    return replace(options, **updates)


def main(argv: list[str] | None = None) -> int:
    run(parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
