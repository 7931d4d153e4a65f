"""One evaluation of several models on several sets and tasks, as an `EvalResult` (distill.results; docs/eval.md).

Shared by `distill eval` and `distill demo`, so the demo's numbers are exactly what a user gets from the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.eval.bootstrap import bootstrap_ci
from distill.eval.eval_set import EvalSet
from distill.eval.runner import evaluate_set, model_info
from distill.results.provenance import provenance
from distill.results.schema import EVAL_KIND, EvalResult


@dataclass
class ModelEntry:
    name: str
    path: str
    role: str = "model"
    label: str | None = None


@dataclass
class Suite:
    models: list[ModelEntry]
    sets: list[EvalSet]
    reference: str | None = None  # agreement and KL are measured against this model (the teacher)
    baseline: str | None = None  # the no-distillation baseline (for gap recovered)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # paired differences a − b to report
    tasks: list[tuple[str, int]] = field(default_factory=list)  # (task spec, items)
    train_texts: Sequence[str] | None = None  # for the contamination check
    chat_template: str | None = None  # renders chat eval sets instead of the tokenizer's own (Jinja or a file)
    max_length: int = 512
    batch_size: int = 4
    seed: int = 0
    throughput_prompts: int = 4
    throughput_new_tokens: int = 32


def load_model(name: str, path: str | Path):
    """A model to evaluate, in fp32, frozen."""
    from distill.models import load_causal_lm

    model = load_causal_lm(f"model {name}", str(path), None, False, torch.float32)
    model.eval()
    model.requires_grad_(False)
    return model


def rendering_model(suite: Suite) -> ModelEntry:
    """The model whose tokenizer encodes the eval sets (and, for chat sets, whose chat template renders them).

    The student's: a run folder's student is saved with the chat template it was trained with
    (`data.chat_template`), so a chat set is rendered as the student saw chat in training. Neither the reference's
    (the teacher's template need not be the student's) nor the baseline's: in `distill eval base=BASE kd=RUN
    --baseline base` the base model may have no chat template at all (eval would then ask for --chat-template) or
    another markup, and the distilled model would be scored on markup it was not trained with. Without a run
    folder: the first model that is neither the reference nor the baseline, then the first that is not the
    reference. Every model shares the vocabulary (`check_same_vocab`), so this choice changes only the rendering.
    """
    others = [m for m in suite.models if m.name != suite.reference]
    return next((m for m in others if m.role == "student"), None) \
        or next((m for m in others if m.name != suite.baseline), None) \
        or (others or suite.models)[0]


def run_suite(suite: Suite) -> EvalResult:
    from distill.data.formatting import use_chat_template
    from distill.eval.generation import generate
    from distill.models import check_logit_width, check_same_vocab, load_tokenizer, output_width

    names = [m.name for m in suite.models]
    for role_name in (suite.reference, suite.baseline, *[n for pair in suite.pairs for n in pair]):
        if role_name is not None and role_name not in names:
            raise ValueError(f"{role_name!r} is not one of the evaluated models {names}")
    first = rendering_model(suite)
    tokenizer = load_tokenizer(f"model {first.name}", first.path)
    use_chat_template(tokenizer, suite.chat_template, field="--chat-template")
    for entry in suite.models:
        if entry is not first:
            check_same_vocab(tokenizer, load_tokenizer(f"model {entry.name}", entry.path))
    loaded = {m.name: load_model(m.name, m.path) for m in suite.models}
    for entry in suite.models:  # wider is padding, cut off when scoring; narrower cannot be scored at all
        check_logit_width(f"model {entry.name} ({entry.path})", output_width(loaded[entry.name]), len(tokenizer))
    infos = {m.name: {**model_info(m.path, loaded[m.name]), "role": m.role, "label": m.label or m.name}
             for m in suite.models}

    result: dict[str, Any] = {"kind": EVAL_KIND, "provenance": provenance(),
                              "reference": suite.reference, "baseline": suite.baseline, "models": infos,
                              "primary": suite.sets[0].name if suite.sets else None, "sets": {}, "tasks": {}}
    for eval_set in suite.sets:
        block, tps = evaluate_set(loaded, tokenizer, eval_set, reference=suite.reference, baseline=suite.baseline,
                                  pairs=suite.pairs, train_texts=suite.train_texts, max_length=suite.max_length,
                                  batch_size=suite.batch_size, seed=suite.seed)
        result["sets"][eval_set.name] = block
        if eval_set is suite.sets[0]:
            for name, value in tps.items():
                infos[name]["score_tokens_per_s"] = round(value, 1)
    result["paired"] = result["sets"][result["primary"]]["paired"] if suite.sets else {}

    if suite.sets and suite.throughput_prompts:
        prompts = [t[:200] for t in suite.sets[0].texts[:suite.throughput_prompts]]
        for name, model in loaded.items():
            gen = generate(model, tokenizer, prompts, max_new_tokens=suite.throughput_new_tokens,
                           batch_size=len(prompts), progress=False)
            infos[name]["generate_tokens_per_s"] = round(gen.new_tokens / max(gen.seconds, 1e-9), 1)
    for spec_name, n in suite.tasks:
        result["tasks"].update(_task_block(spec_name, n, loaded, tokenizer, suite))
    return EvalResult.for_writing(result)


def _task_block(spec_name: str, n: int, loaded: dict, tokenizer, suite: Suite) -> dict[str, Any]:
    from distill.eval.tasks import load_task, run_task

    spec = load_task(spec_name)
    scores, entry = {}, {"version": spec.version, "n": n, "description": spec.description,
                         "max_new_tokens": spec.max_new_tokens, "models": {}, "paired": {}}
    for name, model in loaded.items():
        outcome = run_task(model, tokenizer, spec, n=n, seed=suite.seed)
        scores[name] = outcome.scores
        entry["n"] = len(outcome.scores)  # a JSONL task may hold fewer items than asked for
        entry["models"][name] = {"accuracy": _mean_ci(outcome.scores, suite.seed), "truncated": outcome.truncated_share,
                                 "examples": outcome.examples(3)}
    for a, b in suite.pairs:
        diff = scores[a] - scores[b]
        entry["paired"][f"{a}_minus_{b}"] = {"accuracy": _mean_ci(diff, suite.seed)}
    return {spec.name: entry}


def _mean_ci(values: np.ndarray, seed: int) -> dict[str, float]:
    """Mean of per-item values with its bootstrap interval (items are the resampled unit)."""
    columns = np.stack([np.ones_like(values, dtype=float), np.asarray(values, dtype=float)], axis=1)
    return bootstrap_ci(columns, lambda t: t[..., 1] / t[..., 0], seed=seed).as_dict()
