"""How one token is drawn, so that a row's text depends only on its own key — never on the batch it ran in.

Each row carries its own `torch.Generator`, seeded from a hash of its key (for `distill generate`: the recipe's seed,
the prompt's id and the sample's index) and advanced by exactly one uniform draw per generated token. The token is
then read off the inverse CDF of the row's distribution, its tokens sorted by probability (ties by id). Neither the
batch size, nor which other rows share the batch, nor a resume touches the stream or the order, so the same key gives
the same text. What remains is arithmetic: a batched forward pass can differ from a lone one in the last bits of
fp32, which moves a token only when the uniform lands within that rounding of a boundary between two tokens'
cumulative mass (about one token in 10⁶–10⁷ on a CPU; tested at batch sizes 1 and 8 on tiny models).

Sorting by probability also makes `top_p` (nucleus) a prefix of the same order: the smallest set of most likely
tokens whose mass reaches `top_p`, renormalised.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """One row's generation settings. `temperature` 0 means greedy (argmax, no draw used)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # generation ends when the decoded text contains one; the text is cut before it
    logprobs: int | None = None  # None: none; 0: the chosen token's log-prob; k > 0: also the top-k alternatives

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 0:
            raise ValueError(f"invalid sampling settings {self}")


def row_generator(key: tuple[int, ...]) -> torch.Generator:
    """A CPU generator whose stream depends only on `key` (a tuple of ints), not on Python's hash seed."""
    digest = hashlib.sha256(",".join(str(int(k)) for k in key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def draw_uniforms(generators: list[torch.Generator]) -> torch.Tensor:
    """One uniform in [0, 1) per row, each from its own stream: shape [rows], float64."""
    return torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])


CANDIDATES = 256  # tokens sorted per row on the fast path; rows whose draw falls beyond them take the slow path


def choose_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                  uniforms: torch.Tensor) -> torch.Tensor:
    """`choose_tokens_reference`, without sorting the whole vocabulary: only each row's `CANDIDATES` most likely
    tokens are sorted (probability descending, ties by id), and a row takes the full sort only when its nucleus, or
    its draw, reaches past them (a draw lands there with the candidates' missing mass, usually well under 1%). Which
    path a row takes depends on its own numbers alone, so batch invariance holds. Sorting 49k tokens × 32 rows in
    float64 cost ~0.4 s a decoding step on a CPU core, more than the model's forward pass."""
    greedy = logits.argmax(-1)
    warm = temperature > 0
    if not bool(warm.any()):
        return greedy
    scaled = logits.float() / temperature.clamp_min(1e-6).float().unsqueeze(-1)
    k = min(CANDIDATES, scaled.shape[-1])
    values, ids = scaled.topk(k, dim=-1)
    # a canonical order within the candidates: by id, then stably by value descending (topk leaves ties unordered)
    by_id = ids.argsort(-1)
    ids, values = ids.gather(-1, by_id), values.gather(-1, by_id)
    by_value = torch.sort(-values, dim=-1, stable=True).indices
    ids, values = ids.gather(-1, by_value), values.gather(-1, by_value)
    log_total = torch.logsumexp(scaled.double(), dim=-1, keepdim=True)
    probs = torch.exp(values.double() - log_total)
    cumulative = probs.cumsum(-1)
    covered = cumulative[:, -1]
    keep = (cumulative - probs) < top_p.double().unsqueeze(-1)
    nucleus_inside = covered >= top_p.double()
    mass = torch.where(nucleus_inside, (probs * keep).sum(-1), torch.ones_like(covered))
    target = uniforms.double() * mass
    fast = warm & (nucleus_inside | ((top_p >= 1) & (target < covered)))
    kept_cumulative = (probs * keep).cumsum(-1)
    position = torch.searchsorted(kept_cumulative, target.unsqueeze(-1), right=True).squeeze(-1)
    position = torch.minimum(position, keep.sum(-1) - 1)
    chosen = torch.where(warm, ids.gather(-1, position.unsqueeze(-1)).squeeze(-1), greedy)
    slow = warm & ~fast
    if bool(slow.any()):
        rows = slow.nonzero().squeeze(-1)
        chosen[rows] = choose_tokens_reference(logits[rows], temperature[rows], top_p[rows], uniforms[rows])
    return chosen


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


def top_logprobs(logprobs: torch.Tensor, chosen: torch.Tensor, k: int) -> tuple[list[float], list[list[tuple[int,
                                                                                                            float]]]]:
    """The chosen tokens' log-probs and, when k > 0, each row's top-k (id, log-prob), best first."""
    picked = logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
    if k <= 0:
        return picked, [[] for _ in picked]
    values, ids = logprobs.topk(k, dim=-1)
    return picked, [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
