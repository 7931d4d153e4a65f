"""Teacher cache: its size, how fast it is built and read, and what training from a top-k cache costs a student.

Setting: the demo's (SmolLM2-135M-Instruct teacher, its layers 0, 6, 12, 18, 24, 29 as the student, Shakespeare,
32 steps × 8 × 256 tokens, forward KL, alpha 0, T 1, lr 5e-4, seed 0). For k in {8, 32, 64}:
  format   `build_cache` (what `distill cache --planned-only` runs: the 256 sequences the 32 steps visit) →
           bytes/token of the whole folder and of the records alone, build tokens/s (teacher forward + top-k +
           encode), read tokens/s (decode every record through `TeacherCache.signal`), teacher mass captured.
  values   on a sample of sequences, the q8 values against the exact ones: max and mean |Δ log p|, and
           KL(exact ‖ q8) over the k + 1 outcomes the loss sees; and the same records' bytes/token when the 49k ids
           are scattered at random over a 262,144-id vocabulary (the frequency ranking must undo it).
  quality  the student trained from each cache (objective.topk_mode tail) against the one trained from the live
           dense teacher, same recipe otherwise; plus the no-distillation baseline for scale, and a k = 64 cache
           with exact float32 values (q8 − exact isolates what quantisation costs). All evaluated by the
           `distill eval` suite on the demo's held-out Shakespeare (40 passages): NLL, agreement and forward KL to
           the teacher, each with a 95% BCa bootstrap CI over documents, and paired differences cache − live.
  speed    seconds per training step, live teacher vs cache (a ratio within this run).

Output: JSON lines, the last one a summary. Training runs resume and finished caches are reused (re-running after a
kill continues); `--parts` runs some of the measurements.

    python bench/cache.py > bench/results/cache.jsonl      # ~45 min on 2 CPU cores
    python bench/cache.py --parts values                   # just the value errors (about a minute per k)
    python bench/cache.py --quick                          # tiny teacher and data: a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from distill.data.batch import Batch
from distill.data.dataset import tokenize_data
from distill.demo.plan import DemoOptions, recipe_for
from distill.eval.runner import load_eval_set
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


def caches(ks: tuple[int, ...]) -> list[tuple[str, int, str]]:
    """(name, k, encoding) of every cache: q8 at each k, and exact at the largest k (what quantisation costs)."""
    return [(f"k{k}", k, "q8") for k in ks] + [(f"k{max(ks)}-exact", max(ks), "exact")]


def format_part(live: Recipe, ks: tuple[int, ...], out: Path, n_examples: int) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, k, encoding in caches(ks):
        folder = out / f"cache-{name}"
        started = time.perf_counter()
        manifest = build_cache(with_changes(live, **{"teacher.top_k": k}), folder, encoding=encoding,
                               planned_only=True)
        row = {"bench": "cache_format", "cache": name, "k": k, "encoding": encoding, "n_tokens": manifest["n_tokens"],
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


def quality_part(options: DemoOptions, live: Recipe, baseline: Recipe, ks: tuple[int, ...], out: Path
                 ) -> dict[str, Any]:
    students = {"live": out / "live", "baseline": out / "baseline"} | {
        f"cache-{name}": out / f"student-{name}" for name, _, _ in caches(ks)}
    for name, run in students.items():
        if name == "live":
            recipe = with_changes(live, **{"training.output_dir": str(run)})
        elif name == "baseline":
            recipe = with_changes(baseline, **{"training.output_dir": str(run)})
        else:
            cache, k, encoding = next(c for c in caches(ks) if f"cache-{c[0]}" == name)
            build_cache(with_changes(live, **{"teacher.top_k": k}), out / f"cache-{cache}", encoding=encoding,
                        planned_only=True)
            recipe = with_changes(live, **{"training.output_dir": str(run), "teacher.top_k": k,
                                           "teacher.cache": str(out / f"cache-{cache}")})
        train(recipe, resume=True)
        emit({"bench": "cache_train", "student": name, "s_per_step": seconds_per_step(run),
              "final_loss": read_metrics(run)[-1]["loss"]})

    heldout = load_eval_set(options.heldout, name="heldout", max_docs=options.eval_docs, seed=options.seed)
    from distill.builtin.registry import resolve

    models = [ModelEntry("teacher", str(resolve(options.teacher, "model")), "teacher")]
    models += [ModelEntry(name, str(run / "student"), "student") for name, run in students.items()]
    cache_names = [n for n in students if n.startswith("cache")]
    q8_vs_exact = (f"cache-k{max(ks)}", f"cache-k{max(ks)}-exact")
    pairs = [(n, "live") for n in cache_names] + [("live", "baseline"), q8_vs_exact]
    suite = Suite(models=models, sets=[heldout], reference="teacher", pairs=pairs, max_length=options.max_length * 2,
                  seed=options.seed, throughput_prompts=0)
    result = run_suite(suite)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    metrics = result["sets"]["heldout"]["metrics"]
    paired = result["sets"]["heldout"]["paired"]
    for name in students:
        emit({"bench": "cache_quality", "student": name,
              **{m: metrics[name][m] for m in ("nll", "agreement", "kl_forward")},
              **({f"minus_live_{m}": paired[f"{name}_minus_live"][m] for m in ("nll", "agreement", "kl_forward")}
                 if name in cache_names else {})})
    live_step = seconds_per_step(students["live"])
    exact, q8 = f"cache-k{max(ks)}-exact", f"cache-k{max(ks)}"
    return {"nll_minus_live": {n: paired[f"{n}_minus_live"]["nll"] for n in cache_names},
            "q8_minus_exact_nll": paired[f"{q8}_minus_{exact}"]["nll"],
            "kd_gain_live_minus_baseline_nll": paired["live_minus_baseline"]["nll"],
            "step_time_cache_over_live": {n: seconds_per_step(students[n]) / live_step for n in cache_names}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--quick", action="store_true", help="tiny teacher, 4 steps: checks the script, not the claim")
    parser.add_argument("--sample", type=int, default=16, help="sequences for the value-error measurement")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements to run")
    args = parser.parse_args()
    sys.stdout = sys.stderr

    if args.quick:
        options = DemoOptions(out=args.out, teacher="builtin:tiny-teacher", layers=(0, 3),
                              train_data="builtin:tiny-stories", heldout="builtin:tiny-stories", steps=4,
                              batch_size=4, max_length=64, eval_docs=8)
        ks = (4, 8, 16)
    else:
        options = DemoOptions(out=args.out)
        ks = KS
    live = recipe_for(options, "kd")
    baseline = recipe_for(options, "baseline")
    n_examples = len(tokenize_data(live.data, load_tokenizer("tokenizer", *live.tokenizer_options())).examples)

    summary: dict[str, Any] = {"bench": "cache_summary", "quick": args.quick, "parts": args.parts}
    if "format" in args.parts:
        rows = format_part(live, ks, args.out, n_examples)
        summary["bytes_per_token"] = {k: r["bytes_per_token"] for k, r in rows.items()}
        summary["record_bytes_per_token"] = {k: r["record_bytes_per_token"] for k, r in rows.items()}
    if "values" in args.parts:
        rows = values_part(live, ks, args.sample)
        summary["record_bytes_per_token_262k_scattered"] = {
            k: r["record_bytes_per_token_262k_scattered"] for k, r in rows.items()}
        summary["kl_exact_q8_mean"] = {k: r["kl_exact_q8_mean"] for k, r in rows.items()}
    if "quality" in args.parts:
        summary |= quality_part(options, live, baseline, ks, args.out)
    summary["provenance"] = harness.provenance()
    emit(summary)


if __name__ == "__main__":
    main()
