"""Assemble `reasoning.json` (a `ReasoningResult`) from what the stages left: the generate manifest, each arm's
training data and metrics.jsonl, and the judged answers on the held-out problems."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from distill.atomic import read_jsonl
from distill.demo.reasoning_eval import arm_facts, compare
from distill.demo.reasoning_plan import ReasoningOptions
from distill.demo.summary import training_facts
from distill.generation.prompts import Prompt
from distill.recipe import Recipe
from distill.results.provenance import provenance
from distill.results.reasoning import ReasoningResult

LABELS = {"init": "(a) student before training", "unverified": "(b) SFT on unverified samples",
          "verified": "(c) SFT on verified samples", "verified_kd": "(d) verified samples + logit KD",
          "teacher": "(e) teacher"}
SLICE_FIELDS = ("num_digits", "num_terms")
# (a, b) pairs reported as a − b: what training adds, what verification adds, what logit KD adds, what is left
COMPARISONS = (("verified", "init"), ("unverified", "init"), ("verified", "unverified"), ("verified_kd", "verified"),
               ("teacher", "verified"))


def build_result(options: ReasoningOptions, manifest: dict[str, Any], data: dict[str, Path],
                 recipes: dict[str, Recipe], evaluated: dict[str, dict[str, Any]], prompts: list[Prompt],
                 skipped: int, walls: dict[str, float], threads: int, total_s: float) -> ReasoningResult:
    arms = []
    slices_of = {p.id: _slices(p.record) for p in prompts}
    for name, got in evaluated.items():
        arm: dict[str, Any] = {"name": name, "label": LABELS[name], "path": got["path"], **arm_facts(got["rows"]),
                               "outputs": str(options.out / "eval" / f"{name}.jsonl"),
                               "slices": _slice_counts(got["rows"], slices_of)}
        if name in recipes:
            rows = [json.loads(line) for line in data[name].read_text(encoding="utf-8").splitlines() if line]
            facts = training_facts(recipes[name])
            objective = recipes[name].objective
            arm.update(training_rows=len(rows), accepted_rows=sum(bool(r.get("accepted")) for r in rows),
                       steps=facts["steps"], objective=f"{objective.kind} alpha={objective.alpha:g}",
                       final_loss=facts["final_loss"], train_seconds=facts["wall_s"])
        arms.append(arm)
    comparisons = [compare(a, b, evaluated[a]["rows"], evaluated[b]["rows"], seed=options.seed)
                   for a, b in COMPARISONS if a in evaluated and b in evaluated]
    counts = manifest["counts"]
    n = counts["samples_per_prompt"]
    samples = read_jsonl(options.out / "generate" / "samples.jsonl")
    training_questions = {json.dumps(r["messages"][:-1]) for r in samples}
    overlap = sum(json.dumps(p.messages) in training_questions for p in prompts)
    result = {
        "provenance": provenance(),
        "task": {"name": options.task, "config": options.task_config, "system": options.system,
                 "train_seed": options.train_seed, "eval_seed": options.eval_seed},
        "student": {"layers": list(options.layers), "params": evaluated["init"]["params"],
                    "teacher": options.teacher, "teacher_params": evaluated["teacher"]["params"]},
        "generation": {"prompts": counts["prompts"], "samples_per_prompt": n, "samples": counts["samples"],
                       "accepted": counts["accepted"], "kept": counts["kept"], "pass_at_1": manifest["pass_at_k"]["1"],
                       "pass_at_n": manifest["pass_at_k"][str(n)], "pass_at_k": manifest["pass_at_k"],
                       "prompts_with_an_accepted_sample": manifest["prompts_with_an_accepted_sample"],
                       "mean_completion_tokens": round(manifest["tokens"]["completion"] / max(counts["samples"], 1),
                                                       2),
                       "finish_reasons": manifest["finish_reasons"], "seconds": round(manifest["seconds_this_run"], 1),
                       "output": str(options.out / "generate")},
        "arms": arms,
        "comparisons": comparisons,
        "eval": {"problems": len(prompts), "seed": options.eval_seed, "decoding": "greedy",
                 "max_new_tokens": options.eval_max_new_tokens, "verifier": options.verifier,
                 "overlap_with_training": overlap, "skipped_as_training_questions": skipped},
        "options": {**options.as_json(), "threads_used": threads},
        "wall_s": walls,
        "total_wall_s": round(total_s, 1),
    }
    return ReasoningResult.for_writing(result)


def _slices(record: dict[str, Any]) -> list[str]:
    """Where a problem falls: its reasoning-gym difficulty (`num_digits`, `num_terms` where the item has them) and
    whether its answer is negative — the breakdown that shows where a gain comes from."""
    meta = (record.get("entry") or {}).get("metadata") or {}
    found = [f"{key}={meta[key]}" for key in SLICE_FIELDS if isinstance(meta.get(key), int | str)]
    with contextlib.suppress(ValueError):  # a non-numeric answer has no sign
        found.append("answer<0" if float(str(record.get("answer"))) < 0 else "answer>=0")
    return found


def _slice_counts(rows: list[dict[str, Any]], slices_of: dict[int, list[str]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        for name in slices_of.get(row["id"], []):
            count = counts.setdefault(name, {"correct": 0, "n": 0})
            count["correct"] += bool(row["correct"])
            count["n"] += 1
    return {name: c for name, c in sorted(counts.items()) if c["n"] < len(rows)}  # one holding all tells nothing
