"""Held-out evaluation of the reasoning demo: each model answers the same problems greedily (the generation engine at
temperature 0), the generation verifier judges each answer, and the arms are compared problem by problem.

Why these statistics: pass@1 is a binomial share, so its interval is Wilson's (right at 0% and 100%, where a
bootstrap collapses to a zero-width interval); a difference between two models on the same problems is paired — hard
problems are hard for both — so it gets the paired bootstrap of eval/bootstrap.py and the exact McNemar test on the
problems where exactly one of the two is right.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.demo.reasoning_plan import ReasoningOptions, generation_recipe
from distill.errors import DataError
from distill.eval.bootstrap import paired_difference_ci
from distill.generation.prompts import Prompt, load_prompts, prompt_ids
from distill.generation.verifiers import Verifier

_Z95 = 1.959963984540054


def heldout_prompts(options: ReasoningOptions) -> tuple[list[Prompt], int]:
    """The held-out problems as chat prompts (the training task and system prompt, another generator seed), and how
    many were skipped because the same question is among the training problems: with 1-2 digit operands the task
    repeats questions (~10 of 100 held-out ones were training questions in a run of 64), which would test recall."""
    config = generation_recipe(options).generate
    assert config is not None and config.task is not None
    seen = {p.record["prompt"] for p in load_prompts(config)}
    size = options.eval_problems
    while True:
        task = config.task.model_copy(update={"seed": options.eval_seed, "size": size})
        pool = load_prompts(config.model_copy(update={"task": task}))
        fresh = [p for p in pool if p.record["prompt"] not in seen]
        if len(fresh) >= options.eval_problems or size >= 10 * (options.eval_problems + len(seen)):
            break
        size *= 2
    if len(fresh) < options.eval_problems:
        raise DataError(f"demo reasoning: only {len(fresh)} held-out problems differ from the training ones; the "
                        "task has too few distinct questions for this many problems")
    kept = fresh[: options.eval_problems]
    return kept, kept[-1].id + 1 - len(kept)


def answer_all(model_path: Path | str, tokenizer: Any, prompts: list[Prompt], verify: Verifier,
               options: ReasoningOptions) -> tuple[list[dict[str, Any]], int]:
    """One greedy answer per problem from the model in `model_path`, judged (the rows of eval/<arm>.jsonl), and the
    model's parameter count (tied embeddings once)."""
    import torch

    from distill.generation.engine import Engine, GenRequest
    from distill.generation.sampling import SamplingParams
    from distill.models import load_causal_lm

    model = load_causal_lm("demo reasoning model", str(model_path), None, False, torch.float32)
    engine = Engine(model, tokenizer, max_batch_size=options.eval_batch_size)
    params = SamplingParams(temperature=0.0, max_new_tokens=options.eval_max_new_tokens)
    results = engine.generate([GenRequest(prompt_ids(p, tokenizer), params, (options.seed, p.id, 0)) for p in prompts])
    rows = []
    for prompt, result in zip(prompts, results, strict=True):
        verdict = verify(prompt.record, result.text)
        rows.append({"id": prompt.id, "question": prompt.record["prompt"], "answer": prompt.record["answer"],
                     "completion": result.text, "extracted": verdict.extracted, "correct": verdict.accepted,
                     "reason": verdict.reason, "finish_reason": result.finish_reason,
                     "completion_tokens": result.completion_tokens})
    return rows, sum(p.numel() for p in model.parameters())


def wilson(correct: int, n: int) -> dict[str, float]:
    """The share correct with its 95% Wilson score interval (Wilson 1927)."""
    p = correct / n
    centre = (p + _Z95**2 / (2 * n)) / (1 + _Z95**2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n)) / (1 + _Z95**2 / n)
    return {"mean": p, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half)}


def arm_facts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the result file records of one arm's answers."""
    correct = sum(bool(r["correct"]) for r in rows)
    return {"correct": correct, "n": len(rows), "pass_at_1": wilson(correct, len(rows)),
            "mean_completion_tokens": round(float(np.mean([r["completion_tokens"] for r in rows])), 2),
            "finished_share": sum(r["finish_reason"] == "stop" for r in rows) / len(rows)}


def compare(a: str, b: str, rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], seed: int = 0
            ) -> dict[str, Any]:
    """`a` − `b` in pass@1 over the same problems: paired bootstrap interval, discordant counts, McNemar's p."""
    from scipy.stats import binomtest

    if [r["id"] for r in rows_a] != [r["id"] for r in rows_b]:
        raise ValueError(f"{a} and {b} were not evaluated on the same problems")
    x = np.array([[float(r["correct"])] for r in rows_a])
    y = np.array([[float(r["correct"])] for r in rows_b])
    n = len(x)
    interval = paired_difference_ci(x, y, lambda totals: totals[..., 0] / n, seed=seed)
    a_only = int(((x == 1) & (y == 0)).sum())
    b_only = int(((x == 0) & (y == 1)).sum())
    p = binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a": a, "b": b, "difference": interval.as_dict(), "a_only": a_only, "b_only": b_only,
            "mcnemar_p": float(min(1.0, p))}
