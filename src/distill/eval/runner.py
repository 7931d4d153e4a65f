"""Evaluate models on a held-out set: the `sets.<name>` block of a result (distill.results.schema; docs/eval.md).

One pass scores every model on the same documents in the same batches (the reference — the teacher — first, so
agreement and KL come for free); everything else — intervals, paired differences, slices, calibration, the gap
recovered — is computed from the per-document sums that pass leaves behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from distill.eval import metrics
from distill.eval.bootstrap import bootstrap_ci
from distill.eval.contamination import contamination_result
from distill.eval.doc_stats import DocStats, score_documents
from distill.eval.eval_set import SCORED, EvalSet
from distill.eval.slice_order import ordered_slice_values

LENGTH_BUCKETS = ((0, 128, "<128 tokens"), (128, 256, "128–255 tokens"), (256, 512, "256–511 tokens"),
                  (512, 10**9, "≥512 tokens"))


def length_bucket(n_tokens: int) -> str:
    return next(label for lo, hi, label in LENGTH_BUCKETS if lo <= n_tokens < hi)


def document_length(input_ids: Sequence[int]) -> int:
    """What the `length` slice buckets a document by: every token the model predicts (all after the first, as cut to
    --max-length), scored or not — a chat's questions and template markup and a completion's prompt count too.

    The document's length, not its scored tokens, because that is what "length" means to a reader and what makes a
    long document hard (the context the model reads); a chat with a long question and a short answer is long. It
    also keeps the labels' "tokens" true in every format, and the same bucket means the same thing in a `text` set
    (where every token after the first is scored anyway, so nothing changes) and in a chat set."""
    return max(len(input_ids) - 1, 0)


def evaluate_set(models: dict[str, torch.nn.Module], tokenizer, eval_set: EvalSet, *, reference: str | None,
                 baseline: str | None, pairs: Sequence[tuple[str, str]] = (),
                 train_texts: Sequence[str] | None = None, max_length: int = 512, batch_size: int = 4, seed: int = 0,
                 n_resamples: int = 2000, ngram: int = 8) -> tuple[dict[str, Any], dict[str, float]]:
    """The `sets.<name>` block of eval.json / summary.json, and each model's scoring tokens/s."""
    docs = eval_set.encode(tokenizer, max_length)
    scored = score_documents(models, [d.input_ids for d in docs], labels=[d.labels for d in docs],
                             reference=reference, batch_size=batch_size,
                             pad_token_id=tokenizer.pad_token_id or 0, vocab_size=len(tokenizer),
                             label=f"eval {eval_set.name}")
    stats = scored.stats
    kw = {"seed": seed, "n_resamples": n_resamples}
    block: dict[str, Any] = {
        "description": eval_set.description, "path": eval_set.source, "sha256": eval_set.sha256(),
        "format": eval_set.format, "scored": SCORED[eval_set.format],
        "n_docs": len(docs), "n_tokens": int(sum(d.n_targets for d in docs)),
        "metrics": {name: _as_dicts(metrics.metric_intervals(s, **kw)) for name, s in stats.items()},
        "paired": {f"{a}_minus_{b}": _as_dicts(metrics.paired_intervals(stats[a], stats[b], **kw)) for a, b in pairs},
        "gap_recovered": {},
        "calibration": {name: {"ece": metrics.point(s, "ece"), "bins": metrics.calibration_bins(s)}
                        for name, s in stats.items()},
    }
    if reference is not None and baseline is not None:
        block["gap_recovered"] = {
            name: metrics.gap_recovered(s, stats[baseline], stats[reference], **kw).as_dict()
            for name, s in stats.items() if name not in (reference, baseline)}
    fields = {key: [str(r[key]) for r in eval_set.records] for key in eval_set.slice_fields}
    fields["length"] = [length_bucket(document_length(d.input_ids)) for d in docs]
    block["slices"] = {key: _slices(stats, values, pairs, kw) for key, values in fields.items()}
    block["contamination"], block["contamination_reason"] = contamination_result(train_texts, eval_set.texts,
                                                                                 n=ngram)
    return block, scored.tokens_per_s


def _slices(stats: dict[str, DocStats], values: list[str], pairs: Sequence[tuple[str, str]], kw: dict
            ) -> dict[str, Any]:
    out = {}
    for value in ordered_slice_values(values):
        rows = [i for i, v in enumerate(values) if v == value]
        entry: dict[str, Any] = {"n_docs": len(rows), "metrics": {}, "paired": {}}
        for name, s in stats.items():
            sub = s.subset(rows)
            entry["metrics"][name] = {"nll": _interval_or_point(sub, "nll", kw)}
        if len(rows) >= 2:
            for a, b in pairs:
                diff = metrics.joint_interval([stats[a].subset(rows), stats[b].subset(rows)], "nll",
                                              lambda x, y: x - y, **kw)
                entry["paired"][f"{a}_minus_{b}"] = {"nll": diff.as_dict()}
        out[value] = entry
    return out


def _interval_or_point(stats: DocStats, name: str, kw: dict) -> dict[str, float | None]:
    """A slice with one document has no interval: report its value with null bounds rather than invent them."""
    if stats.n_docs < 2:
        return {"mean": metrics.point(stats, name), "ci_low": None, "ci_high": None}
    return bootstrap_ci(stats.values, metrics.statistic(stats, name), **kw).as_dict()


def _as_dicts(intervals: dict[str, metrics.Interval]) -> dict[str, dict[str, float]]:
    return {name: interval.as_dict() for name, interval in intervals.items()}


def model_info(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Parameters (unique tensors, so tied embeddings count once) and weight bytes on disk."""
    from distill.models import count_parameters

    folder = Path(path)
    weights = [p for p in folder.glob("*") if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"}] \
        if folder.is_dir() else []
    return {"path": str(path), "params": count_parameters(model),
            "disk_bytes": sum(p.stat().st_size for p in weights) if weights else None}
