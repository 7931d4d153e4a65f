"""What a cache's values depend on, hashed so that a cache and a training setup can be compared.

A cache is only valid for the exact token sequences it was computed on, with the tokenizer that made them, from the
teacher that scored them, at the temperature they were captured at. Each of these is reduced to a hash here (plus
the readable settings behind it, so that a mismatch can be named, not just detected).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from distill.data.formatting import Example
from distill.data.identity import sha256_json

# the scheme of a top-k cache, and of every cache written before schemes were recorded
TOPK_SCHEME = {"name": "topk"}

# config.json keys that say where or when a model was saved, not what it computes
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype",
                         "_attn_implementation_autoset", "_attn_implementation", "use_cache"}


def weights_sha256(model: PreTrainedModel) -> str:
    """A checksum of every parameter and buffer (name, dtype, shape, bytes) in a fixed order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def teacher_identity(model: PreTrainedModel, source: str, dtype: str, revision: str | None = None) -> dict[str, Any]:
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return {"source": source, "revision": revision, "dtype": dtype, "config": config,
            "config_sha256": sha256_json(config), "weights_sha256": weights_sha256(model)}


def data_sha256(examples: list[Example]) -> str:
    """A checksum of the tokenized sequences themselves (ids and labels), in order: what the teacher scored."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(np.asarray(len(e.input_ids), dtype="<i8").tobytes())
        digest.update(np.asarray(e.input_ids, dtype="<i4").tobytes())
        digest.update(np.asarray(e.labels, dtype="<i4").tobytes())
        if e.position_ids is not None:  # packed documents that do not see each other: the teacher saw other contexts
            digest.update(b"positions" + np.asarray(e.position_ids, dtype="<i4").tobytes())
    return digest.hexdigest()


def _short(value: str | None) -> str:
    return "none" if value is None else value[:12]


def _teacher_differences(a: dict[str, Any], b: dict[str, Any], wanted_name: str) -> list[str]:
    """With both weight hashes at hand they decide (a moved folder is the same teacher); otherwise the names do:
    model, revision and dtype as the recipe gives them."""
    if "weights_sha256" in b:
        if a["weights_sha256"] != b["weights_sha256"] or a["config_sha256"] != b["config_sha256"]:
            return [f"teacher: a different model or precision ({a['source']!r} {a['dtype']} in the cache, "
                    f"{b['source']!r} {b['dtype']} in the {wanted_name}; weights sha256 "
                    f"{_short(a['weights_sha256'])} vs {_short(b['weights_sha256'])})"]
        return []
    differ = {"source": not _same_source(a.get("source"), b.get("source")),
              "revision": a.get("revision") != b.get("revision"), "dtype": a.get("dtype") != b.get("dtype")}
    return [f"teacher.{name}: {a.get(key)!r} in the cache, {b.get(key)!r} in the {wanted_name}"
            for key, name in (("source", "model"), ("revision", "revision"), ("dtype", "dtype")) if differ[key]]


def _same_source(a: str | None, b: str | None) -> bool:
    """The same hub id or built-in, or two spellings of one local folder (`./t`, `t`, `/abs/t`)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def setup_differences(cached: dict[str, Any], wanted: dict[str, Any], wanted_name: str = "recipe") -> list[str]:
    """Each way `wanted` differs from the setup a cache was built for, as a phrase naming the field.

    Keys that `wanted` leaves out are not compared (a training run that loads no teacher cannot check its weights).
    """
    problems = []
    if "tokenizer" in wanted:
        a, b = cached["tokenizer"], wanted["tokenizer"]
        if a["vocab_size"] != b["vocab_size"]:
            problems.append(f"tokenizer: {a['vocab_size']:,} tokens in the cache, {b['vocab_size']:,} in the "
                            f"{wanted_name}")
        elif a["chat_template"] != b["chat_template"]:
            problems.append("tokenizer: the chat template differs")
        elif a["sha256"] != b["sha256"]:
            problems.append(f"tokenizer: a different tokenizer (sha256 {_short(a['sha256'])} in the cache, "
                            f"{_short(b['sha256'])} in the {wanted_name})")
    if "data" in wanted and cached["data"]["sha256"] != wanted["data"]["sha256"]:
        a, b = cached["data"]["config"], wanted["data"]["config"]
        fields = [f"data.{key} {a.get(key)!r} in the cache, {b.get(key)!r} in the {wanted_name}"
                  for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        problems.append("; ".join(fields) if fields else
                        f"data: the tokenized sequences differ (the contents of {b.get('train')!r} changed since the "
                        "cache was built)")
    if "teacher" in wanted:
        problems += _teacher_differences(cached["teacher"], wanted["teacher"], wanted_name)
    if "scheme" in wanted:
        problems += _scheme_differences(cached.get("scheme", TOPK_SCHEME), wanted["scheme"], wanted_name)
    for key, field in (("capture_temperature", "teacher.capture_temperature"), ("k", "teacher.top_k"),
                       ("encoding", "encoding"), ("examples", "examples")):
        if key in wanted and cached[key] != wanted[key] and not (key == "k" and None in (cached[key], wanted[key])):
            problems.append(f"{field}: {cached[key]!r} in the cache, {wanted[key]!r} in the {wanted_name}")
    return problems


def _scheme_differences(a: dict[str, Any], b: dict[str, Any], wanted_name: str) -> list[str]:
    if a["name"] != b["name"]:
        return [f"teacher.cache_scheme: {a['name']!r} in the cache, {b['name']!r} in the {wanted_name}"]
    return [f"teacher.{field}: {a[key]!r} in the cache, {b[key]!r} in the {wanted_name}"
            for key, field in (("draws", "sample_draws"), ("proposal_temperature", "proposal_temperature"))
            if a.get(key) != b.get(key)]
