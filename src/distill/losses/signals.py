"""What a teacher hands the loss for each valid target position: the signal types every teacher source produces.

A signal's rows are the batch's valid target positions in `[:, :-1][mask]` order (the state at t predicts the token
at t + 1), so every loss consumes any signal the same way:

- dense logits, a tensor (N, V): a live teacher on the reference path;
- `TeacherHidden`: a live teacher's last hidden states (N, H) and its LM head, projected chunk by chunk on the
  chunked path (never N × V at once);
- `TopKSignal`: the k most likely tokens with their log-probabilities and the tail's mass, what a teacher cache or
  an API returns.
- `SampledSignal`: tokens drawn from the teacher's distribution with importance weights, what a sampled cache holds
  (Anshumann et al. 2025): an unbiased estimate of the teacher's distribution, consumed by `losses/sampled.py`.

A new kind (hidden-state features for a feature term) joins `TeacherSignal` here, next to the losses that consume
it, and `losses/support.py` puts it on the common support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.losses.lm_head import LMHead
from distill.losses.names import SAMPLE_WEIGHTS, SampleWeights

# fp32 cannot tell 1 − Σ top-k from 0 below its resolution 2⁻²⁴: a tail known only as "1 − Σ" and found empty is
# below this, not zero (see `TopKSignal.tail`)
UNRESOLVED_TAIL = -24 * math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, accurate near 0 and for very negative x (Mächler 2012)."""
    x = x.clamp(max=0.0)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass
class TopKSignal:
    """The teacher's k most likely tokens at each position.

    ids: (..., k) token ids. logprobs: (..., k) their log-probabilities under the teacher's *full* distribution at
    `capture_temperature` (so they sum to less than 1). tail_logmass: (...) log of the mass outside the top-k at that
    temperature, computed from the logits outside the top-k (a logsumexp), so a tail of 10⁻²⁰ is stored as such
    rather than as log(1 − Σ top-k), which cancels to −inf in fp32 below ~6·10⁻⁸. When it is not given, `tail()`
    derives it from `logprobs` (all an API may return) and floors what fp32 cannot resolve at `UNRESOLVED_TAIL`.
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail_logmass: torch.Tensor | None = None
    capture_temperature: float = 1.0

    @classmethod
    def from_logits(cls, logits: torch.Tensor, k: int, temperature: float = 1.0) -> TopKSignal:
        """Capture a top-k signal from dense teacher logits at `temperature` (as a cache or an API would)."""
        logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
        top, ids = logprobs.topk(k, dim=-1)
        tail = torch.logsumexp(logprobs.scatter_(-1, ids, -math.inf), dim=-1)  # −inf only when k is the vocabulary
        return cls(ids=ids, logprobs=top, tail_logmass=tail, capture_temperature=temperature)

    @property
    def k(self) -> int:
        return self.ids.shape[-1]

    def tail(self) -> torch.Tensor:
        """log of the teacher's mass outside the top-k: the stored value, else 1 − Σ top-k floored at what fp32
        resolves (`UNRESOLVED_TAIL`). −inf means an empty tail, which is only right when k is the vocabulary; the
        support replaces it by the floor otherwise."""
        if self.tail_logmass is not None:
            return self.tail_logmass.float()
        return log1mexp(torch.logsumexp(self.logprobs.float(), dim=-1)).clamp(min=UNRESOLVED_TAIL)

    def captured_mass(self) -> torch.Tensor:
        """Teacher mass inside the top-k at the capture temperature, per token (logged during training)."""
        return torch.logsumexp(self.logprobs.float(), dim=-1).exp()

    def to(self, device: torch.device | str) -> TopKSignal:
        tail = None if self.tail_logmass is None else self.tail_logmass.to(device)
        return TopKSignal(self.ids.to(device), self.logprobs.to(device), tail, self.capture_temperature)

    def select(self, index: torch.Tensor | slice) -> TopKSignal:
        """The rows `index` (a boolean mask over the leading dimensions, or a slice of the first)."""
        tail = None if self.tail_logmass is None else self.tail_logmass[index]
        return TopKSignal(self.ids[index], self.logprobs[index], tail, self.capture_temperature)


@dataclass
class SampledSignal:
    """Tokens drawn from the teacher at each position, as an unbiased estimate of its distribution.

    At each position `draws` tokens were drawn with replacement from the proposal r ∝ p^(1/t) (p the teacher at
    `capture_temperature`, t the proposal temperature) and kept once each. ids: (..., m) the distinct drawn tokens,
    padded to the widest position with id 0 and weight 0; logprobs: (..., m) log p of each (0 on padding);
    weights: (..., m) importance weights with E[Σ_j w_j f(x_j)] = Σ_v p_v f(v) for any f — in particular
    E[weights scattered over the vocabulary] = p, which makes the forward-KL gradient unbiased (see
    `losses/sampled.py`). Two such weightings, `importance_weights`: "counts" (the paper's, the default) and
    "inclusion" (lower variance).
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    weights: torch.Tensor
    capture_temperature: float = 1.0

    @classmethod
    def from_logits(cls, logits: torch.Tensor, draws: int, temperature: float = 1.0,
                    proposal_temperature: float = 1.0, generator: torch.Generator | None = None,
                    estimator: SampleWeights = "counts") -> SampledSignal:
        """Draw a sampled signal from dense teacher logits (N, V) at `temperature` (as a sampled cache does)."""
        ids, counts, logprobs, log_z = draw(torch.log_softmax(logits.float() / temperature, dim=-1), draws,
                                            proposal_temperature, generator)
        return cls(ids=ids, logprobs=logprobs,
                   weights=importance_weights(counts, logprobs, log_z, draws, proposal_temperature, estimator),
                   capture_temperature=temperature)

    def distinct(self) -> torch.Tensor:
        """Distinct tokens per position (logged during training: the signal's effective size)."""
        return (self.weights > 0).sum(-1)

    def to(self, device: torch.device | str) -> SampledSignal:
        return SampledSignal(self.ids.to(device), self.logprobs.to(device), self.weights.to(device),
                             self.capture_temperature)

    def select(self, index: torch.Tensor | slice) -> SampledSignal:
        return SampledSignal(self.ids[index], self.logprobs[index], self.weights[index], self.capture_temperature)


def draw(log_p: torch.Tensor, draws: int, proposal_temperature: float = 1.0,
         generator: torch.Generator | None = None
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(ids, counts, logprobs, log_z): `draws` tokens per row of the teacher's log-probabilities `log_p` (N, V),
    drawn with replacement from r ∝ p^(1/t), kept once each (padded with id 0, count 0, log-prob 0), and
    log Σ_v p_v^(1/t) per row (None at t = 1): all a sampled cache stores."""
    log_r, log_z = log_p, None
    if proposal_temperature != 1.0:
        flattened = log_p / proposal_temperature
        log_z = torch.logsumexp(flattened, dim=-1)
        log_r = flattened - log_z.unsqueeze(-1)
    ids, counts = distinct_counts(torch.multinomial(log_r.exp(), draws, replacement=True, generator=generator))
    logprobs = torch.where(counts > 0, log_p.gather(-1, ids), 0.0)  # a pad's id 0 may be ruled out (−inf)
    return ids, counts, logprobs, log_z


def distinct_counts(drawn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, counts), each (N, m): the distinct tokens of each row of `drawn` (N, draws) in ascending id order and
    how often each was drawn; rows with fewer than m distinct tokens are padded with id 0 and count 0."""
    ordered = drawn.sort(dim=-1).values
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    slot = first.long().cumsum(-1) - 1
    width = int(slot[:, -1].max()) + 1 if ordered.shape[0] else 0
    ids = torch.zeros(ordered.shape[0], width, dtype=torch.long, device=drawn.device)
    ids.scatter_(-1, slot, ordered)  # repeats of a token write the same id into its slot
    counts = torch.zeros_like(ids).scatter_add_(-1, slot, torch.ones_like(ordered))
    return ids, counts


def importance_weights(counts: torch.Tensor, logprobs: torch.Tensor, log_z: torch.Tensor | None, draws: int,
                       proposal_temperature: float, estimator: SampleWeights = "counts") -> torch.Tensor:
    """Unbiased weights for the distinct drawn tokens, from what a sampled cache stores. With r = p^(1/t) / Z the
    proposal (log r = log p / t − log Z; `log_z` (N,) is None when t = 1, then r = p):

    - "counts", Anshumann et al.'s Horvitz–Thompson weights over the draws: (count / N) · p / r. At t = 1 these
      are the draw frequencies, which do not use the stored log p at all (so q8 values cost the gradient nothing);
      per position the gradient's total variance is (1 − Σ p²) / N.
    - "inclusion", Horvitz–Thompson over the distinct tokens: p / π with π = 1 − (1 − r)^N, the chance a token is
      drawn at least once. Unbiased because E[1{v drawn}] = π_v; its variance per vocabulary entry,
      p²(1 − π) / π, is never above the counts' p(1 − p) / N at t = 1 and vanishes for tokens nearly sure to be
      drawn (on the demo's teacher it halves the total at 32 draws). The price: the weights are p itself, so they
      are only as exact as the stored log p — q8 values bias them by the quantisation error. On the demo the two
      train equally good students (docs/cache.md).
    """
    present = counts > 0
    log_p = logprobs.float()
    t = proposal_temperature
    if estimator == "inclusion":
        log_r = log_p if log_z is None or t == 1.0 else log_p / t - log_z.float().unsqueeze(-1)
        inclusion = -torch.expm1(draws * log1mexp(log_r))  # 1 − (1 − r)^N, exact for tiny r and for r → 1
        return torch.where(present, log_p.exp() / inclusion, 0.0)
    if estimator != "counts":
        raise ValueError(f"unknown sampled-signal estimator {estimator!r}; known: {', '.join(SAMPLE_WEIGHTS)}")
    frequency = counts.float() / draws
    if log_z is None or t == 1.0:
        return frequency
    ratio = (1.0 - 1.0 / t) * log_p + log_z.float().unsqueeze(-1)
    return torch.where(present, frequency * ratio.exp(), 0.0)


@dataclass
class TeacherHidden:
    """A dense teacher given as last hidden states (N, H_t) and its own LM head, projected chunk by chunk."""

    hidden: torch.Tensor
    head: LMHead


TeacherSignal = TeacherHidden | TopKSignal | SampledSignal | torch.Tensor  # Tensor: dense teacher logits (N, V)
# signals that hold part of the teacher's distribution: refused by losses that need p at arbitrary tokens
PARTIAL_SIGNALS = (TopKSignal, SampledSignal)


def signal_sums(signal: TeacherSignal | None) -> dict[str, torch.Tensor]:
    """Sums over the signal's rows worth logging next to the loss (divided by the same global count): the teacher
    mass a top-k signal holds. A dense signal holds all of it, and says nothing."""
    if isinstance(signal, TopKSignal):
        return {"teacher_mass": signal.captured_mass().sum()}
    if isinstance(signal, SampledSignal):
        return {"teacher_distinct": signal.distinct().sum().float()}
    return {}
