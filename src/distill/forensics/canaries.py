"""Canary exposure (Carlini et al. 2019, "The Secret Sharer") and plain extraction.

The teacher answered each secret trigger with a planted response holding a random secret from a candidate space R.
A suspect that trained on those answers gives the true secret a higher likelihood than the other candidates. Rank
the true secret among R by the suspect's log-likelihood of the planted response given the trigger (formatted as the
teacher was served): exposure = log2|R| − log2 rank. Under H0 (the suspect never saw the canary) the secret is a
uniform draw from R independent of the suspect, so its rank is uniform and rank/|R| is an exact p-value
(= 2^−exposure). When |R| exceeds `max_candidates` the rank is estimated from a seeded uniform sample of candidates,
and the Monte Carlo p-value (1 + #sampled scoring ≥ the secret) / (m + 1) stays valid (the secret and the samples
are exchangeable under H0). Ties count against the secret (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distill.data.batch import collate
from distill.data.formatting import Example
from distill.defenses.keys import CanarySpace

ESTIMATOR = ("rank ≈ 1 + (|R| − 1)·q̂, q̂ = share of m candidates drawn uniformly with replacement from R (seeded; "
             "draws equal to the secret left out) whose log-likelihood is ≥ the secret's; exposure = log2|R| − "
             "log2 rank; with q̂ = 0 the sample only shows exposure ≳ log2 m")


def candidate(space: CanarySpace, index: int) -> str:
    """The index-th string of the space (alphabet order, first character most significant)."""
    chars = []
    for _ in range(space.length):
        index, digit = divmod(index, len(space.alphabet))
        chars.append(space.alphabet[digit])
    return "".join(reversed(chars))


def candidate_index(space: CanarySpace, secret: str) -> int:
    index = 0
    for ch in secret:
        index = index * len(space.alphabet) + space.alphabet.index(ch)
    return index


def response_logliks(model: torch.nn.Module, tokenizer: Any, prompt: Sequence[int], responses: Sequence[str], *,
                     n_tokens: int, batch_size: int = 64) -> list[float]:
    """log p(response | prompt) in nats for each response (its own tokens, no special tokens), batched."""
    device = next(model.parameters()).device
    encoded = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    out: list[float] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = [list(prompt) + list(r) for r in encoded[start:start + batch_size]]
            padded = collate([Example(seq, seq) for seq in batch], pad_id=0)
            ids = padded["input_ids"]
            logits = model(input_ids=ids.to(device), attention_mask=padded["attention_mask"].to(device),
                           use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1, :n_tokens].float(), dim=-1).cpu()
            token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for row, seq in enumerate(batch):
                out.append(float(token_logp[row, len(prompt) - 1:len(seq) - 1].sum()))
    return out


@dataclass
class Exposure:
    loglik: float
    rank: float
    method: str  # "exact" or "sampled"
    candidates_scored: int
    exposure: float
    p_value: float
    above: int  # candidates (exact) or sampled draws scoring ≥ the secret, the secret excluded


def exposure(space: CanarySpace, secret: str, score: Any, *, max_candidates: int, seed: int = 0) -> Exposure:
    """Rank `secret` among the space by `score(list of candidate strings) -> list of log-likelihoods`."""
    size = space.size
    own = score([space.response(secret)])[0]
    if size <= max_candidates:
        others = [candidate(space, i) for i in range(size) if candidate(space, i) != secret]
        values = np.asarray(score([space.response(c) for c in others]), dtype=np.float64)
        above = int((values >= own).sum())
        rank = 1 + above
        return Exposure(own, float(rank), "exact", size, math.log2(size) - math.log2(rank), rank / size, above)
    rng = np.random.default_rng([seed, candidate_index(space, secret)])
    draws = [candidate(space, int(i)) for i in rng.integers(0, size, size=max_candidates)]
    values = np.asarray(score([space.response(c) for c in draws]), dtype=np.float64)
    others = np.asarray([c != secret for c in draws])
    hits = values >= own
    above = int((hits & others).sum())
    share = above / max(int(others.sum()), 1)
    rank = 1 + (size - 1) * share
    p_value = (1 + int(hits.sum())) / (max_candidates + 1)
    return Exposure(own, rank, "sampled", max_candidates + 1, math.log2(size) - math.log2(rank), p_value, above)
