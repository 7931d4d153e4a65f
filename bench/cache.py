"""Teacher cache: its size, how fast it is built and read, and what training from a top-k or a sampled cache costs
a student.

Setting: the demo's (SmolLM2-135M-Instruct teacher, its layers 0, 6, 12, 18, 24, 29 as the student, Shakespeare,
32 steps × 8 × 256 tokens, forward KL, alpha 0, T 1, lr 5e-4, seed 0). Caches: top-k at k in {8, 32, 64} (q8) and
k = 64 exact; sampled (Anshumann et al. 2025) at 8, 16, 32 and 64 draws per position from the teacher itself
(t = 1), each trained with the default count weights (`sN`) and with inclusion weights (`sN-inclusion`, the same
cache folder), and 32 draws from a flatter proposal (t = 2).
  format   `build_cache` (what `distill cache --planned-only` runs: the 256 sequences the 32 steps visit) →
           bytes/token of the whole folder and of the records alone, build tokens/s (teacher forward + top-k or
           draws + encode), read tokens/s (decode every record through `TeacherCache.signal`), teacher mass held.
  values   on a sample of sequences, the top-k q8 values against the exact ones: max and mean |Δ log p|, and
           KL(exact ‖ q8) over the k + 1 outcomes the loss sees; and the same records' bytes/token when the 49k ids
           are scattered at random over a 262,144-id vocabulary (the frequency ranking must undo it).
  quality  the student trained from each cache (top-k: objective.topk_mode tail) against the one trained from the
           live dense teacher, same recipe otherwise; the no-distillation baseline for scale; q8 − exact at k = 64
           (what quantisation costs); and alpha = 0.5 students (half cross-entropy with the data) of the live
           teacher and of the k = 64 cache, each against its alpha = 0 twin and the cache's against live. All
           evaluated by the `distill eval` suite on the demo's held-out Shakespeare (40 passages): NLL, agreement,
           ECE and forward KL to the teacher, each with a 95% BCa bootstrap CI over documents, paired differences.
  speed    seconds per training step, live teacher vs cache (a ratio within this run).

Output: JSON lines, the last one a summary with `sampled_bytes_per_token`, `sampled_nll_minus_live` and
`sampled_nll_minus_live_ci_high` (the smallest sampled budget whose student is no worse than live: the CI of the
difference includes 0 or favours the cache; else the best sampled one). Training runs resume and finished caches
are reused (re-running after a kill continues); `--parts` runs some of the measurements, `--caches` some of the
caches.

    python bench/cache.py > bench/results/cache.jsonl      # ~70 min on 2 CPU cores
    python bench/cache.py --caches k64,s8,s16,s32,s64,s8-inclusion,s16-inclusion,s32-inclusion,s64-inclusion
                                      # the sampled budgets, both weightings, against top-k 64 only
    python bench/cache.py --parts values                   # just the value errors (about a minute per k)
    python bench/cache.py --quick                          # tiny teacher and data: a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from distill.data.batch import Batch
from distill.data.dataset import tokenize_data
from distill.demo.plan import DemoOptions, recipe_for
from distill.eval.eval_set import load_eval_set
from distill.eval.suite import ModelEntry, Suite, run_suite
from distill.losses.divergences import kl
from distill.losses.signals import TopKSignal
from distill.losses.support import topk_support
from distill.models import load_teacher, load_tokenizer
from distill.recipe import Recipe, validate_recipe
from distill.teachers.cache import codec
from distill.teachers.cache.build import build_cache, capture, vocab_order
from distill.teachers.cache.store import TeacherCache
from distill.training.loop import train
from distill.training.metrics import read_metrics

KS = (8, 32, 64)
DRAWS = (8, 16, 32, 64)
SCATTERED_VOCAB = 262_144


RESULTS = sys.stdout  # JSON lines only; progress bars and library chatter go to stderr (see main)


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), file=RESULTS, flush=True)


def with_changes(recipe: Recipe, **changes: Any) -> Recipe:
    raw = recipe.model_dump(mode="json")
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return validate_recipe(raw)


def read_speed(cache: TeacherCache, n_examples: int) -> float:
    absent = set(cache.missing(list(range(n_examples))))
    examples = [e for e in range(n_examples) if e not in absent]
    start = time.perf_counter()
    tokens = sum(cache.signal([e]).ids.shape[0] for e in examples)
    return tokens / (time.perf_counter() - start)


def value_errors(recipe: Recipe, k: int, sample: int) -> dict[str, float]:
    """q8 against exact values on `sample` sequences; and their bytes with the ids scattered over 262k."""
    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    data = tokenize_data(recipe.data, tokenizer)
    teacher = load_teacher(recipe.teacher)
    vocab = len(tokenizer)
    order = vocab_order(data, vocab)
    rank = codec.inverse_permutation(order)
    scatter = np.random.default_rng(0).permutation(SCATTERED_VOCAB)[:vocab]
    wide_order = np.concatenate([scatter[order], np.setdiff1d(np.arange(SCATTERED_VOCAB), scatter)])
    wide_rank = codec.inverse_permutation(wide_order)
    picked = np.linspace(0, len(data.examples) - 1, sample).astype(int).tolist()
    errs, kls, tokens, narrow, wide = [], [], 0, 0, 0
    for start in range(0, len(picked), 4):
        batch = Batch.of([data.examples[e] for e in picked[start:start + 4]], tokenizer.pad_token_id)
        for signal in capture(teacher, batch, k, recipe.capture_temperature, vocab):
            record = codec.encode(signal, rank, "q8")
            decoded = codec.decode(record, order)
            a = np.take_along_axis(signal.logprobs, np.argsort(signal.ids, 1), 1)
            b = np.take_along_axis(decoded.logprobs, np.argsort(decoded.ids, 1), 1)
            errs.append(np.abs(a - b).ravel())
            student = torch.zeros(len(signal), vocab)  # any student: the support's teacher side is what differs
            exact = TopKSignal(torch.from_numpy(signal.ids), torch.from_numpy(signal.logprobs),
                               torch.from_numpy(signal.tail))
            q8 = TopKSignal(torch.from_numpy(decoded.ids), torch.from_numpy(decoded.logprobs),
                            torch.from_numpy(decoded.tail))
            log_p, _ = topk_support(student, exact, 1.0, "tail")
            log_p_q, _ = topk_support(student, q8, 1.0, "tail")
            # align the two supports: both hold the same ids; order the k entries by id, keep the tail last
            ia, ib = exact.ids.argsort(-1), q8.ids.argsort(-1)
            pa = torch.cat([log_p[:, :-1].gather(-1, ia), log_p[:, -1:]], -1)
            pb = torch.cat([log_p_q[:, :-1].gather(-1, ib), log_p_q[:, -1:]], -1)
            kls.append(kl(pa, pb).numpy())  # an empty tail (−inf in both) contributes 0
            tokens += len(signal)
            narrow += len(record)
            wide_signal = codec.Signal(scatter[signal.ids], signal.logprobs, signal.tail)
            wide += len(codec.encode(wide_signal, wide_rank, "q8"))
    err = np.concatenate(errs)
    return {"sample_tokens": tokens, "max_abs_dlogp": float(err.max()), "mean_abs_dlogp": float(err.mean()),
            "kl_exact_q8_mean": float(np.concatenate(kls).mean()), "record_bytes_per_token": narrow / tokens,
            "record_bytes_per_token_262k_scattered": wide / tokens}


def seconds_per_step(run_dir: Path) -> float:
    rows = read_metrics(run_dir)[1:]  # the first step carries warm-up
    return float(np.median([r["targets"] / r["tokens_per_s"] for r in rows])) if rows else float("nan")


PARTS = ("format", "values", "quality")


@dataclass(frozen=True)
class CacheSpec:
    """One cache of the comparison: its name, the recipe changes that describe it, its encoding, and the folder it
    reads (`reads`: another spec's, when only the reading differs — a sampled cache's weights)."""

    name: str
    changes: dict[str, Any]
    encoding: str = "q8"
    reads: str | None = None

    @property
    def k(self) -> int | None:
        return self.changes.get("teacher.top_k")

    @property
    def folder(self) -> str:
        return f"cache-{self.reads or self.name}"


def caches(ks: tuple[int, ...], draws: tuple[int, ...], only: list[str] | None = None) -> list[CacheSpec]:
    """Every cache: top-k in q8 at each k and exact at the largest (what quantisation costs); sampled at each number
    of draws (proposal t = 1) read with the default count weights and, from the same folder, with inclusion weights
    (`-inclusion`), and in the `counts` encoding (`-counts`: no values; the same draws and gradient as `sN`, so only
    built when named); and at the middle number with a flatter proposal (t = 2). `only`: these names (`sN`,
    `sN-counts` and `sN-tT` for any N ≤ 255 and T ≥ 1)."""
    specs = [CacheSpec(f"k{k}", {"teacher.top_k": k}) for k in ks]
    specs.append(CacheSpec(f"k{max(ks)}-exact", {"teacher.top_k": max(ks)}, "exact"))
    sampled = {"teacher.cache_scheme": "sampled"}
    named = [m for m in (re.fullmatch(r"s(\d+)(?:-counts|-t(\d+(?:\.\d+)?))?", n) for n in only or []) if m]
    for d in sorted(set(draws) | {int(m[1]) for m in named if 1 <= int(m[1]) <= 255}):  # any number, when named
        specs.append(CacheSpec(f"s{d}", {**sampled, "teacher.sample_draws": d}))
        specs.append(CacheSpec(f"s{d}-counts", {**sampled, "teacher.sample_draws": d}, "counts"))
        specs.append(CacheSpec(f"s{d}-inclusion", {**sampled, "teacher.sample_draws": d,
                                                   "teacher.sample_weights": "inclusion"}, reads=f"s{d}"))
    for m in named:  # sN-tT: N draws from the teacher flattened by T (the middle number at t = 2 is a default)
        if m[2] is not None and m[0] != f"s{draws[len(draws) // 2]}-t2" and 1 <= int(m[1]) <= 255:
            specs.append(CacheSpec(m[0], {**sampled, "teacher.sample_draws": int(m[1]),
                                          "teacher.proposal_temperature": float(m[2])}))
    middle = draws[len(draws) // 2]
    specs.append(CacheSpec(f"s{middle}-t2", {**sampled, "teacher.sample_draws": middle,
                                              "teacher.proposal_temperature": 2.0}))
    unknown = sorted(set(only or []) - {c.name for c in specs})
    if unknown:
        raise SystemExit(f"--caches: unknown {unknown}; known: {', '.join(c.name for c in specs)}")
    # a `-counts` student trains exactly as its q8 twin does: by default only named ones are built and trained
    return [c for c in specs if (c.name in only if only is not None else c.encoding != "counts")]


def build(live: Recipe, spec: CacheSpec, out: Path) -> dict[str, Any]:
    return build_cache(with_changes(live, **spec.changes), out / spec.folder, encoding=spec.encoding,
                       planned_only=True)


def format_part(live: Recipe, specs: list[CacheSpec], out: Path, n_examples: int) -> dict[str, dict[str, Any]]:
    rows = {}
    for spec in specs:
        if spec.reads is not None:  # the same bytes as the folder's own spec
            continue
        name, folder = spec.name, out / spec.folder
        started = time.perf_counter()
        manifest = build(live, spec, out)
        row = {"bench": "cache_format", "cache": name, "k": spec.k, "scheme": manifest.get("scheme"),
               "encoding": spec.encoding, "n_tokens": manifest["n_tokens"],
               "bytes_per_token": manifest["bytes_per_token"],
               "record_bytes_per_token": manifest["record_bytes_per_token"],
               "build_tokens_per_s": manifest["build"]["tokens_per_s"], "build_s": time.perf_counter() - started,
               "read_tokens_per_s": read_speed(TeacherCache.open(folder), n_examples),
               "captured_mass": manifest["captured_mass_mean"]}
        emit(row)
        rows[name] = row
    return rows


def values_part(live: Recipe, ks: tuple[int, ...], sample: int) -> dict[str, dict[str, Any]]:
    rows = {}
    for k in ks:
        row = {"bench": "cache_values", "k": k,
               **value_errors(with_changes(live, **{"teacher.top_k": k}), k, sample)}
        emit(row)
        rows[f"k{k}"] = row
    return rows


ALPHA = 0.5  # the alpha > 0 rows: half cross-entropy with the data, for a top-k cache and the live teacher


def quality_part(options: DemoOptions, live: Recipe, baseline: Recipe, specs: list[CacheSpec], out: Path,
                 alpha_rows: bool) -> dict[str, Any]:
    """Train every student, evaluate all of them in one suite, and pair each cache's student with the live one (and
    each alpha > 0 student with its alpha = 0 twin)."""
    students: dict[str, tuple[Path, Recipe]] = {"live": (out / "live", live), "baseline": (out / "baseline", baseline)}
    for spec in specs:
        build(live, spec, out)
        students[f"cache-{spec.name}"] = (out / f"student-{spec.name}", with_changes(
            live, **spec.changes, **{"teacher.cache": str(out / spec.folder)}))
    top = max((s for s in specs if s.k is not None and s.encoding == "q8"), key=lambda s: s.k, default=None)
    if alpha_rows:
        students[f"live-a{ALPHA:g}"] = (out / f"live-a{ALPHA:g}", with_changes(live, **{"objective.alpha": ALPHA}))
        if top is not None:
            name = f"cache-{top.name}"
            students[f"{name}-a{ALPHA:g}"] = (out / f"student-{top.name}-a{ALPHA:g}",
                                              with_changes(students[name][1], **{"objective.alpha": ALPHA}))
    for name, (run, recipe) in students.items():
        train(with_changes(recipe, **{"training.output_dir": str(run)}), resume=True)
        emit({"bench": "cache_train", "student": name, "s_per_step": seconds_per_step(run),
              "final_loss": read_metrics(run)[-1]["loss"]})

    heldout = load_eval_set(options.heldout, name="heldout", max_docs=options.eval_docs, seed=options.seed)
    from distill.builtin.registry import resolve

    models = [ModelEntry("teacher", str(resolve(options.teacher, "model")), "teacher")]
    models += [ModelEntry(name, str(run / "student"), "student") for name, (run, _) in students.items()]
    cache_names = [f"cache-{spec.name}" for spec in specs]
    pairs = [(n, "live") for n in cache_names] + [("live", "baseline")]
    exact = [s for s in specs if s.encoding == "exact"]
    if exact and f"cache-k{exact[0].k}" in students:
        pairs.append((f"cache-k{exact[0].k}", f"cache-{exact[0].name}"))
    with_alpha = [n for n in students if n.endswith(f"-a{ALPHA:g}")]  # each against its alpha = 0 twin, and live
    alpha_pairs = [(n, n.removesuffix(f"-a{ALPHA:g}")) for n in with_alpha]
    alpha_pairs += [(n, "live") for n in with_alpha if n.startswith("cache")]
    suite = Suite(models=models, sets=[heldout], reference="teacher", pairs=pairs + alpha_pairs,
                  max_length=options.max_length * 2, seed=options.seed, throughput_prompts=0)
    result = run_suite(suite).to_json()
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    metrics = result["sets"]["heldout"]["metrics"]
    paired = result["sets"]["heldout"]["paired"]
    for name in students:
        emit({"bench": "cache_quality", "student": name, **{m: metrics[name][m] for m in QUALITY},
              **({f"minus_live_{m}": paired[f"{name}_minus_live"][m] for m in QUALITY}
                 if f"{name}_minus_live" in paired else {})})
    live_step = seconds_per_step(students["live"][0])
    return {"paired": {f"{a}_minus_{b}": {m: paired[f"{a}_minus_{b}"][m] for m in QUALITY}
                       for a, b in pairs + alpha_pairs},
            "nll_minus_live": {n: paired[f"{n}_minus_live"]["nll"] for n in cache_names},
            "kd_gain_live_minus_baseline_nll": paired["live_minus_baseline"]["nll"],
            "step_time_cache_over_live": {n: seconds_per_step(students[n][0]) / live_step for n in cache_names}}


QUALITY = ("nll", "agreement", "ece", "kl_forward")


def sampled_verdict(summary: dict[str, Any], bytes_per_token: dict[str, float]) -> dict[str, Any]:
    """The issue's figures: the smallest sampled budget whose student is no worse than the live teacher's on held-out
    NLL (the CI of cache − live includes 0 or lies below it: its lower end ≤ 0), else the sampled cache closest to
    that; its bytes/token and NLL − live with its CI."""
    def size(name: str) -> float | None:  # an `-inclusion` student reads its draws' folder
        return bytes_per_token.get(name.removeprefix("cache-").removesuffix("-inclusion"))

    rows = [(size(name), name, ci) for name, ci in summary["nll_minus_live"].items()
            if size(name) is not None and name.startswith("cache-s")]
    if not rows:
        return {}
    passing = sorted((r for r in rows if r[2]["ci_low"] <= 0), key=lambda r: r[0])
    size, name, ci = passing[0] if passing else min(rows, key=lambda r: r[2]["ci_low"])
    return {"sampled_cache": name, "sampled_bytes_per_token": size, "sampled_nll_minus_live": ci["mean"],
            "sampled_nll_minus_live_ci_low": ci["ci_low"], "sampled_nll_minus_live_ci_high": ci["ci_high"],
            "sampled_no_worse_than_live": bool(passing), "sampled_goal_met": bool(passing) and size <= 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--quick", action="store_true", help="tiny teacher, 4 steps: checks the script, not the claim")
    parser.add_argument("--sample", type=int, default=16, help="sequences for the value-error measurement")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements to run")
    parser.add_argument("--caches", help="comma-separated cache names (default: all): k8, k32, k64, k64-exact, s8, "
                        "s16, s32, s64, s8-inclusion, …, s64-inclusion, s8-counts, …, s64-counts, s32-t2; and sN, "
                        "sN-counts and sN-tT (a proposal at temperature T) for any N up to 255")
    parser.add_argument("--no-alpha", action="store_true", help=f"skip the alpha = {ALPHA:g} students")
    parser.add_argument("--steps", type=int, default=DemoOptions.steps,
                        help="training steps of every student (the demo's 32); caches cover the steps' examples")
    args = parser.parse_args()
    sys.stdout = sys.stderr

    if args.quick:
        options = DemoOptions(out=args.out, teacher="builtin:tiny-teacher", layers=(0, 3),
                              train_data="builtin:tiny-stories", heldout="builtin:tiny-stories", steps=4,
                              batch_size=4, max_length=64, eval_docs=8)
        ks, draws = (4, 8, 16), (4, 8, 16)
    else:
        options = DemoOptions(out=args.out, steps=args.steps)
        ks, draws = KS, DRAWS
    specs = caches(ks, draws, args.caches.split(",") if args.caches else None)
    live = recipe_for(options, "kd")
    baseline = recipe_for(options, "baseline")
    n_examples = len(tokenize_data(live.data, load_tokenizer("tokenizer", *live.tokenizer_options())).examples)

    summary: dict[str, Any] = {"bench": "cache_summary", "quick": args.quick, "steps": options.steps,
                               "parts": args.parts, "caches": [s.name for s in specs]}
    if "format" in args.parts:
        rows = format_part(live, specs, args.out, n_examples)
        summary["bytes_per_token"] = {k: r["bytes_per_token"] for k, r in rows.items()}
        summary["record_bytes_per_token"] = {k: r["record_bytes_per_token"] for k, r in rows.items()}
    if "values" in args.parts:
        rows = values_part(live, tuple(s.k for s in specs if s.k is not None and s.encoding == "q8"), args.sample)
        summary["record_bytes_per_token_262k_scattered"] = {
            k: r["record_bytes_per_token_262k_scattered"] for k, r in rows.items()}
        summary["kl_exact_q8_mean"] = {k: r["kl_exact_q8_mean"] for k, r in rows.items()}
    if "quality" in args.parts:
        summary |= quality_part(options, live, baseline, specs, args.out, alpha_rows=not args.no_alpha)
        if "bytes_per_token" in summary:
            summary |= sampled_verdict(summary, summary["bytes_per_token"])
    summary["provenance"] = harness.provenance()
    emit(summary)


if __name__ == "__main__":
    main()
