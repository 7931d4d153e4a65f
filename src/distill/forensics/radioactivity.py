"""Watermark radioactivity (Sander et al., "Watermarking Makes Language Models Radioactive", NeurIPS 2024): a model
trained on a teacher's watermarked output over-produces that key's green (window, token) pairs.

Closed mode: the suspect writes text on prompts (sampled with `generation/engine.py`, one seeded stream per row) and
the detector scores its own (window, token) pairs. Open mode: the suspect reads the teacher's watermarked text and
its top-1 next-token prediction after each window is scored as the pair (window from the teacher's text, predicted
token) — the paper's "reading mode", which needs the weights but no generation. Both feed `detector.py`, which
applies the de-duplication and input rules and computes the exact binomial p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distill.data.batch import collate
from distill.data.formatting import Example
from distill.defenses.watermark import GreenList
from distill.forensics.detector import Pair, Stream, Window


def windows_of(ids: Sequence[int], h: int) -> set[Window]:
    """Every window (h consecutive tokens) of a sequence."""
    return {tuple(ids[i:i + h]) for i in range(len(ids) - h + 1)}


def own_pairs(ids: Sequence[int], h: int) -> list[Pair]:
    """The (window, token) pairs of a text whose windows lie wholly inside it (as `GreenList.scored_pairs`)."""
    return [(tuple(ids[t - h:t]), int(ids[t])) for t in range(h, len(ids))]


def closed_streams(engine: Any, prompts: Sequence[Sequence[int]], green: GreenList, *, samples: int = 1,
                   temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 128, seed: int = 0
                   ) -> tuple[list[Stream], int]:
    """Sample the suspect on every prompt (`samples` each; row keys (seed, prompt, sample)); one stream per
    generation, the prompt's windows excluded. Returns the streams and the tokens generated."""
    from distill.generation.engine import GenRequest
    from distill.generation.sampling import SamplingParams

    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    requests = [GenRequest(list(p), params, (seed, i, s)) for i, p in enumerate(prompts) for s in range(samples)]
    results = engine.generate(requests)
    h = green.context_width
    streams = [Stream(own_pairs(r.token_ids, h), excluded=windows_of(q.prompt_ids, h))
               for q, r in zip(requests, results, strict=True)]
    return streams, sum(len(r.token_ids) for r in results)


def top1_predictions(model: torch.nn.Module, documents: Sequence[Sequence[int]], *, n_tokens: int,
                     batch_size: int = 8, pad_id: int = 0) -> list[list[int]]:
    """The model's greedy next-token prediction at every position: out[d][t] predicts documents[d][t + 1]. Logits
    are cut to the tokenizer's `n_tokens` (padded output rows are no token)."""
    device = next(model.parameters()).device
    out: list[list[int]] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(documents), batch_size):
            batch = documents[start:start + batch_size]
            padded = collate([Example(list(d), list(d)) for d in batch], pad_id)
            logits = model(input_ids=padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device),
                           use_cache=False).logits
            top = logits[..., :n_tokens].argmax(-1).cpu()
            out.extend(top[row, :len(doc) - 1].tolist() for row, doc in enumerate(batch))
    return out


def open_streams(documents: Sequence[Sequence[int]], predictions: Sequence[Sequence[int]], h: int) -> list[Stream]:
    """One stream per teacher document: (the teacher's window ending at t − 1, the suspect's prediction for t),
    scoring only each window's first occurrence in the document (see detector.py)."""
    streams = []
    for doc, pred in zip(documents, predictions, strict=True):
        pairs = [(tuple(doc[t - h:t]), int(pred[t - 1])) for t in range(h, len(doc))]
        streams.append(Stream(pairs, first_window_only=True))
    return streams


def tokenize_documents(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[list[int]]:
    """Each text as ids (no special tokens: the watermark was applied to the text's own tokens), cut to
    `max_length`; texts shorter than two tokens are dropped (nothing to predict)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [list(d[:max_length]) for d in ids if len(d) >= 2]
