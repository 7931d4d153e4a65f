"""Where a cache build's signals come from: the `SignalSource` protocol, and the live teacher model (`LiveSignals`,
`capture` for the top-k scheme, `capture_sampled` for the sampled one). The other source is an OpenAI-compatible
endpoint: `teachers/api/harvest.py`. build.py writes the shards, journals, seals and manifest for either; a source
only turns each shard's pending examples into signals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from distill.data.batch import Batch
from distill.data.dataset import TokenizedData
from distill.losses.fused_linear import auto_chunk_size
from distill.losses.lm_head import LMHead, last_hidden_states
from distill.losses.signals import TopKSignal, draw
from distill.teachers.cache import codec
from distill.teachers.cache.sampled_codec import SampledRecord, concat


def _row_logits(teacher, batch: Batch, vocab: int) -> Iterator[Iterator[torch.Tensor]]:
    """For each sequence of `batch`, the teacher's logits at its target positions, `auto_chunk_size` rows at a time
    (never a whole sequence × vocabulary at once)."""
    head = LMHead.of(teacher)
    hidden = last_hidden_states(teacher, **batch.model_inputs())[:, :-1]
    _, valid = batch.targets()
    chunk = auto_chunk_size(vocab)
    for row in range(hidden.shape[0]):
        h = hidden[row][valid[row]]
        yield (head.logits(h[s:s + chunk])[:, :vocab] for s in range(0, h.shape[0], chunk))


@torch.no_grad()
def capture(teacher, batch: Batch, k: int, temperature: float, vocab: int) -> list[codec.Signal]:
    """The teacher's top-k signal at every target position of each sequence in `batch`."""
    signals = []
    for chunks in _row_logits(teacher, batch, vocab):
        parts = [TopKSignal.from_logits(logits, k, temperature) for logits in chunks]
        signals.append(codec.Signal(ids=torch.cat([p.ids for p in parts]).cpu().numpy(),
                                    logprobs=torch.cat([p.logprobs for p in parts]).cpu().numpy(),
                                    tail=torch.cat([p.tail() for p in parts]).cpu().numpy()))
    return signals


@dataclass(frozen=True)
class Sampling:
    """The sampled scheme's parameters (`teacher.cache_scheme: sampled`): `draws` tokens per position from the
    teacher at the capture temperature flattened by `proposal_temperature`; `seed` makes each example's draws a
    function of (seed, example) alone, so a resumed or re-sharded build writes the same bytes."""

    draws: int
    proposal_temperature: float
    seed: int
    entropy: bool = False  # also H(p) per position: only the `counts` encoding stores it

    def generator(self, example: int, device) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, example]).generate_state(2, dtype=np.uint32)
        return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def capture_sampled(teacher, batch: Batch, examples: list[int], sampling: Sampling, temperature: float, vocab: int
                    ) -> list[SampledRecord]:
    """The teacher's sampled signal at every target position of each sequence in `batch` (`examples`: their
    indices in the data, which seed their draws)."""
    records = []
    for example, chunks in zip(examples, _row_logits(teacher, batch, vocab), strict=True):
        generator = sampling.generator(example, batch.input_ids.device)
        parts = []
        for logits in chunks:
            log_p = torch.log_softmax(logits.float() / temperature, dim=-1)
            ids, counts, logprobs, log_z = draw(log_p, sampling.draws, sampling.proposal_temperature, generator)
            entropy = None
            if sampling.entropy:  # H(p): what the `counts` encoding keeps in log p's place (0 · log 0 = 0)
                p = log_p.exp()
                entropy = -torch.where(p > 0, p * log_p, 0.0).sum(-1).cpu().numpy()
            parts.append(SampledRecord(ids.cpu().numpy(), logprobs.cpu().numpy(), counts.cpu().numpy(),
                                       None if log_z is None else log_z.cpu().numpy(), entropy))
        records.append(concat(parts))
    return records


class SignalSource(Protocol):
    """Where a build's signals come from (see the module doc)."""

    def signals(self, groups: list[list[int]]) -> Iterator[tuple[int, codec.Signal | SampledRecord]]:
        """`(example, signal)` for every example of every group (a shard's pending examples), group after group and
        each group in its order: the order the shards' journals are written in."""
        ...


class LiveSignals:
    """The teacher model on this process's device, `batch_size` sequences per forward pass. Batches never span two
    shards, as before sources were pluggable: a batch's make-up (its padding) can change the last bits of its
    values, and a refactor must not change a cache's bytes."""

    def __init__(self, teacher, data: TokenizedData, pad_id: int, k: int, temperature: float, vocab: int,
                 batch_size: int, device, sampling: Sampling | None = None):
        """`sampling`: draw tokens (the sampled scheme) instead of keeping the top `k`."""
        self.teacher, self.data, self.pad_id, self.device = teacher, data, pad_id, device
        self.k, self.temperature, self.vocab, self.batch_size = k, temperature, vocab, batch_size
        self.sampling = sampling

    def signals(self, groups: list[list[int]]) -> Iterator[tuple[int, codec.Signal | SampledRecord]]:
        for pending in groups:
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start:start + self.batch_size]
                batch = Batch.of([self.data.examples[e] for e in chunk], self.pad_id).to(self.device)
                if self.sampling is not None:
                    signals = capture_sampled(self.teacher, batch, chunk, self.sampling, self.temperature, self.vocab)
                else:
                    signals = capture(self.teacher, batch, self.k, self.temperature, self.vocab)
                yield from zip(chunk, signals, strict=True)
