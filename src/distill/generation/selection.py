"""From every judged sample to the training rows: rejection sampling (keep accepted samples, at most
`max_accepted` per prompt), duplicate removal, and the manifest's counts and pass@k.

This runs over the whole journal once, in (prompt id, sample index) order, after the last sample is in — never
while samples arrive — so which rows are kept depends only on the samples, not on the order a server finished them
or on where a run was killed. A duplicate does not take one of a prompt's `max_accepted` places, so a prompt keeps
up to `max_accepted` *distinct* accepted completions, the lowest sample indices first; once the places are taken,
a later accepted sample counts as `over_max_accepted` whether or not it is a duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from math import comb
from typing import Any

from distill.generation.dedup import Deduplicator
from distill.recipe.generate import GenerateConfig


def select(rows: list[dict[str, Any]], config: GenerateConfig) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Mark each row (`kept`, and `dropped`: why not) in place, return the kept ones and the counts."""
    dedup = Deduplicator(config.dedup) if config.dedup is not None else None
    kept_per_prompt: dict[int, int] = defaultdict(int)
    counts = {"samples": len(rows), "accepted": 0, "rejected": 0, "exact_duplicates": 0, "near_duplicates": 0,
              "over_max_accepted": 0, "kept": 0}
    kept: list[dict[str, Any]] = []
    for row in rows:
        row["kept"], row["dropped"] = False, None
        if not row["accepted"]:
            counts["rejected"] += 1
            row["dropped"] = "rejected"
            continue
        counts["accepted"] += 1
        pid = row["prompt_id"]
        if config.max_accepted is not None and kept_per_prompt[pid] >= config.max_accepted:
            counts["over_max_accepted"] += 1
            row["dropped"] = "over_max_accepted"
            continue
        if dedup is not None:
            decision = dedup.offer(pid, row["sample"], completion_text(row))
            if decision.duplicate:
                counts[f"{decision.kind}_duplicates"] += 1
                row["dropped"] = f"{decision.kind}_duplicate"
                row["duplicate_of"] = list(decision.duplicate_of or ())
                continue
        kept_per_prompt[pid] += 1
        row["kept"] = True
        counts["kept"] += 1
        kept.append(row)
    return kept, counts


def completion_text(row: dict[str, Any]) -> str:
    if "messages" in row:
        return str(row["messages"][-1]["content"])
    return str(row["completion"])


def pass_at_k(correct: list[int], n: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. (2021, "Evaluating Large Language Models Trained on Code", eq. 1):
    the mean over prompts of 1 − C(n − c, k) / C(n, k), c a prompt's accepted samples of n."""
    if not correct:
        return float("nan")
    return sum(1.0 - (comb(n - c, k) / comb(n, k) if n - c >= k else 0.0) for c in correct) / len(correct)


def rates(rows: list[dict[str, Any]], n_prompts: int, n: int) -> dict[str, Any]:
    """Acceptance rate and pass@k (`pass_at_k`, keyed by k as text) for k = 1, 2, 4, … and n, over prompts."""
    correct = [0] * n_prompts
    for row in rows:
        correct[row["prompt_id"]] += bool(row["accepted"])
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n} | {n})
    return {"acceptance_rate": sum(correct) / max(1, n_prompts * n),
            "pass_at_k": {str(k): pass_at_k(correct, n, k) for k in ks},
            "prompts_with_an_accepted_sample": sum(c > 0 for c in correct)}
