"""Which token a uniform draw picks from a distribution: the inverse CDF over tokens sorted by probability (ties by
id), restricted to the top-p nucleus. One uniform in, one token out, so a row's choice depends only on its own
numbers and its own random stream — never on the batch it is in.

The engine's sampler (`generation/sampling.py`) and the losses that draw a token from the student at each position
(Hybrid Policy Distillation's â, `losses/reweighted.py`) both choose here. `choose_tokens` is the fast path,
`choose_tokens_reference` its slow twin (tests/test_engine.py holds them equal).
"""

from __future__ import annotations

import torch

# tokens sorted per row on the fast path, tier by tier: a row whose nucleus or draw reaches past a tier's candidates
# tries the next; past the last it takes the full sort. An untrained student's flat rows send ~10% of its draws past
# the first tier (bench/onpolicy.py), which a full float64 sort of 49k tokens made ~0.35 s of a 64-token rollout.
CANDIDATE_TIERS = (256, 4096)


def choose_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                  uniforms: torch.Tensor) -> torch.Tensor:
    """`choose_tokens_reference`, without sorting the whole vocabulary: only each row's most likely tokens are
    sorted (probability descending, ties by id) — 256, then 4096 for the rows whose nucleus or draw reaches past
    those — and a row takes the full sort only when it reaches past the last tier (a draw lands there with the
    candidates' missing mass). Which path a row takes depends on its own numbers alone, so batch invariance holds.
    Sorting 49k tokens × 32 rows in float64 cost ~0.4 s a decoding step on a CPU core, more than the model's
    forward pass."""
    greedy = logits.argmax(-1)
    warm = temperature > 0
    if not bool(warm.any()):
        return greedy
    scaled = logits.float() / temperature.clamp_min(1e-6).float().unsqueeze(-1)
    log_total = torch.logsumexp(scaled.double(), dim=-1)
    chosen = greedy.clone()
    pending = warm.nonzero().squeeze(-1)
    for tier in CANDIDATE_TIERS:
        picked, fast = _among_candidates(scaled[pending], log_total[pending], top_p[pending], uniforms[pending],
                                         min(tier, scaled.shape[-1]))
        chosen[pending[fast]] = picked[fast]
        pending = pending[~fast]
        if not len(pending):
            return chosen
    chosen[pending] = choose_tokens_reference(logits[pending], temperature[pending], top_p[pending],
                                              uniforms[pending])
    return chosen


def _among_candidates(scaled: torch.Tensor, log_total: torch.Tensor, top_p: torch.Tensor, uniforms: torch.Tensor,
                      k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, settled) per row from its `k` most likely tokens: settled where the nucleus, or the draw, falls
    inside them, so the token is the one the full sort would give."""
    values, ids = scaled.topk(k, dim=-1)
    # a canonical order within the candidates: by id, then stably by value descending (topk leaves ties unordered)
    by_id = ids.argsort(-1)
    ids, values = ids.gather(-1, by_id), values.gather(-1, by_id)
    by_value = torch.sort(-values, dim=-1, stable=True).indices
    ids, values = ids.gather(-1, by_value), values.gather(-1, by_value)
    probs = torch.exp(values.double() - log_total.unsqueeze(-1))
    cumulative = probs.cumsum(-1)
    covered = cumulative[:, -1]
    keep = (cumulative - probs) < top_p.double().unsqueeze(-1)
    nucleus_inside = covered >= top_p.double()
    mass = torch.where(nucleus_inside, (probs * keep).sum(-1), torch.ones_like(covered))
    target = uniforms.double() * mass
    settled = nucleus_inside | ((top_p >= 1) & (target < covered))
    kept_cumulative = (probs * keep).cumsum(-1)
    position = torch.searchsorted(kept_cumulative, target.unsqueeze(-1), right=True).squeeze(-1)
    position = torch.minimum(position, keep.sum(-1) - 1)
    return ids.gather(-1, position.unsqueeze(-1)).squeeze(-1), settled


def choose_tokens_reference(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                  uniforms: torch.Tensor) -> torch.Tensor:
    """The slow twin of `choose_tokens`: the whole vocabulary sorted, in float64. The token of each row: argmax where
    its temperature is 0, else the inverse CDF of softmax(logits / T), restricted to the top-p nucleus, at the row's
    uniform. logits [rows, V]; the rest [rows]."""
    greedy = logits.argmax(-1)
    warm = temperature > 0
    if not bool(warm.any()):
        return greedy
    scaled = logits.double() / temperature.clamp_min(1e-6).double().unsqueeze(-1)
    probs = torch.softmax(scaled, dim=-1)
    # descending probability, ties by ascending id: a stable sort of the negated values
    order = torch.sort(-probs, dim=-1, stable=True).indices
    sorted_probs = probs.gather(-1, order)
    cumulative = sorted_probs.cumsum(-1)
    # the nucleus: keep a token while the mass *before* it is below top_p (so the first token is always kept)
    keep = (cumulative - sorted_probs) < top_p.double().unsqueeze(-1)
    kept_mass = (sorted_probs * keep).sum(-1)
    cumulative = (sorted_probs * keep).cumsum(-1)
    target = (uniforms.to(cumulative.dtype) * kept_mass).unsqueeze(-1)
    position = torch.searchsorted(cumulative, target, right=True).squeeze(-1)
    position = torch.minimum(position, keep.sum(-1) - 1)  # u·mass can round onto the last boundary
    sampled = order.gather(-1, position.unsqueeze(-1)).squeeze(-1)
    return torch.where(warm, sampled, greedy)
