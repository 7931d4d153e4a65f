"""Where a cache build's signals come from: the `SignalSource` protocol, and the live teacher model (`LiveSignals`,
`capture`). The other source is an OpenAI-compatible endpoint: `teachers/api/harvest.py`. build.py writes the
shards, journals, seals and manifest for either; a source only turns each shard's pending examples into signals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from distill.data.batch import Batch
from distill.data.dataset import TokenizedData
from distill.losses.fused_linear import auto_chunk_size
from distill.losses.lm_head import LMHead, last_hidden_states
from distill.losses.signals import TopKSignal
from distill.teachers.cache import codec


@torch.no_grad()
def capture(teacher, batch: Batch, k: int, temperature: float, vocab: int) -> list[codec.Signal]:
    """The teacher's top-k signal at every target position of each sequence in `batch`."""
    head = LMHead.of(teacher)
    hidden = last_hidden_states(teacher, batch.input_ids, batch.attention_mask)[:, :-1]
    _, valid = batch.targets()
    chunk = auto_chunk_size(vocab)
    signals = []
    for row in range(hidden.shape[0]):
        h = hidden[row][valid[row]]
        parts = [TopKSignal.from_logits(head.logits(h[s:s + chunk])[:, :vocab], k, temperature)
                 for s in range(0, h.shape[0], chunk)]
        signals.append(codec.Signal(ids=torch.cat([p.ids for p in parts]).cpu().numpy(),
                                    logprobs=torch.cat([p.logprobs for p in parts]).cpu().numpy(),
                                    tail=torch.cat([p.tail() for p in parts]).cpu().numpy()))
    return signals


class SignalSource(Protocol):
    """Where a build's signals come from (see the module doc)."""

    def signals(self, groups: list[list[int]]) -> Iterator[tuple[int, codec.Signal]]:
        """`(example, signal)` for every example of every group (a shard's pending examples), group after group and
        each group in its order: the order the shards' journals are written in."""
        ...


class LiveSignals:
    """The teacher model on this process's device, `batch_size` sequences per forward pass. Batches never span two
    shards, as before sources were pluggable: a batch's make-up (its padding) can change the last bits of its
    values, and a refactor must not change a cache's bytes."""

    def __init__(self, teacher, data: TokenizedData, pad_id: int, k: int, temperature: float, vocab: int,
                 batch_size: int, device):
        self.teacher, self.data, self.pad_id, self.device = teacher, data, pad_id, device
        self.k, self.temperature, self.vocab, self.batch_size = k, temperature, vocab, batch_size

    def signals(self, groups: list[list[int]]) -> Iterator[tuple[int, codec.Signal]]:
        for pending in groups:
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start:start + self.batch_size]
                batch = Batch.of([self.data.examples[e] for e in chunk], self.pad_id).to(self.device)
                yield from zip(chunk, capture(self.teacher, batch, self.k, self.temperature, self.vocab), strict=True)
