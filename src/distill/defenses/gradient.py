"""`distill defenses gradient`: the proxy's gradient g for antidistillation sampling, computed once and stored.

g = ∇θ (1/N) Σ_rows mean_{completion tokens} −log p(token | before; θ): the mean over held-out teacher traces of each
trace's mean next-token NLL on its completion (prompt/completion rows, or chat `messages` whose assistant turns are
the completion — e.g. a `distill generate` train.jsonl; tokenized exactly as `distill train` tokenizes them). This
is the authors' quantity (locuslab/antidistillation-sampling `save_grad.py`, batch size 1: the per-trace mean loss,
averaged over traces; g is not normalised). One departure: the proxy runs in eval mode (no dropout), so the same
data give the same g; the Llama/Qwen-style proxies the paper uses have no dropout anyway.

The file is safetensors (one float32 tensor per parameter, by name) with a metadata header: the proxy's name and
weights' sha256, the data's sha256 and the number of rows and target tokens. The processor refuses a file made for
other weights (`antidistillation.check_gradient`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from distill.defenses.antidistillation import GRADIENT_FORMAT, GRADIENT_VERSION
from distill.errors import DataError

LOSS = "mean over rows of the mean completion-token NLL"


def encode_traces(data: str, tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each row, labels −100 outside the completion, as `distill train` makes them."""
    from distill.data.formatting import detect_format, encode_messages, encode_prompt_completion
    from distill.data.sources import read_records

    records = read_records(data, "--data")
    if not records:
        raise DataError(f"--data: {data} holds no rows")
    out = []
    for i, record in enumerate(records):
        where = records.where(i) if hasattr(records, "where") else f"{data}, row {i + 1}"
        kind = detect_format(record, "auto", field="--data")
        if kind == "messages":
            example = encode_messages(record, tokenizer, where)
        elif kind == "prompt_completion":
            example = encode_prompt_completion(record, tokenizer, where)
        else:
            raise DataError(f"--data: {where}: needs prompt/completion or chat messages (the teacher's traces), "
                            "not plain text")
        if example.n_targets == 0:
            raise DataError(f"--data: {where}: the completion has no tokens to learn from")
        out.append((example.input_ids, example.labels))
    return out


def trace_loss(model: Any, ids: list[int], labels: list[int]) -> torch.Tensor:
    """One trace's mean NLL over its completion tokens (position t − 1 predicts token t)."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    logits = model(input_ids=input_ids).logits[0, :-1].float()
    targets = torch.tensor(labels[1:], device=device)
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)


def compute_gradient(model: Any, traces: list[tuple[list[int], list[int]]], progress: bool = False
                     ) -> dict[str, torch.Tensor]:
    """g over `traces`, one trace at a time (exact, and memory that does not grow with the data)."""
    from distill.progress import progress as progress_display

    was_training = model.training
    model.eval()
    params = {name: p for name, p in model.named_parameters()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        with progress_display("gradient", disable=not progress) as bar:
            job = bar.add_task("gradient", total=len(traces))
            for ids, labels in traces:
                (trace_loss(model, ids, labels) / len(traces)).backward()
                bar.advance(job)
        return {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().cpu().contiguous()
                for name, p in params.items()}
    finally:
        for p in params.values():
            p.grad = None
            p.requires_grad_(False)
        model.train(was_training)


def write_gradient(proxy: str, data: str, out: str | Path, *, device: str = "auto", progress: bool = False
                   ) -> dict[str, str]:
    """Load the proxy and its tokenizer, compute g on `data`, write `out`; returns the metadata header."""
    from safetensors.torch import save_file

    from distill.atomic import temporary_name
    from distill.defenses.proxy import load_proxy
    from distill.models import load_tokenizer
    from distill.teachers.cache.fingerprint import weights_sha256

    tokenizer = load_tokenizer("--proxy", proxy)
    traces = encode_traces(data, tokenizer)
    target = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load_proxy(proxy, "--proxy", target)
    grads = compute_gradient(model, traces, progress)
    meta = {"format": GRADIENT_FORMAT, "version": GRADIENT_VERSION, "proxy": proxy,
            "proxy_weights_sha256": weights_sha256(model), "data": str(data),
            "data_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest() if Path(data).is_file() else "",
            "rows": str(len(traces)), "targets": str(sum(sum(1 for x in lab[1:] if x != -100) for _, lab in traces)),
            "loss": LOSS}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(temporary_name(out.name))
    save_file(grads, str(tmp), metadata=meta)
    tmp.replace(out)
    return meta
