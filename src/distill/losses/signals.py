"""What a teacher hands the loss for each valid target position: the signal types every teacher source produces.

A signal's rows are the batch's valid target positions in `[:, :-1][mask]` order (the state at t predicts the token
at t + 1), so every loss consumes any signal the same way:

- dense logits, a tensor (N, V): a live teacher on the reference path;
- `TeacherHidden`: a live teacher's last hidden states (N, H) and its LM head, projected chunk by chunk on the
  chunked path (never N × V at once);
- `TopKSignal`: the k most likely tokens with their log-probabilities and the tail's mass, what a teacher cache or
  an API returns.

A new kind (sampled tokens, hidden-state features for a feature term) joins `TeacherSignal` here, next to the losses
that consume it, and `losses/support.py` puts it on the common support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.losses.lm_head import LMHead

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
class TeacherHidden:
    """A dense teacher given as last hidden states (N, H_t) and its own LM head, projected chunk by chunk."""

    hidden: torch.Tensor
    head: LMHead


TeacherSignal = TeacherHidden | TopKSignal | torch.Tensor  # Tensor: dense teacher logits (N, V)


def signal_sums(signal: TeacherSignal | None) -> dict[str, torch.Tensor]:
    """Sums over the signal's rows worth logging next to the loss (divided by the same global count): the teacher
    mass a top-k signal holds. A dense signal holds all of it, and says nothing."""
    if isinstance(signal, TopKSignal):
        return {"teacher_mass": signal.captured_mass().sum()}
    return {}
