"""An API teacher that scores each batch while training runs: what on-policy distillation needs from a teacher it
can only reach over HTTP, since the student's completions exist only once the student has written them.

    signal(batch) -> TopKSignal        one echo-scoring request per row (scoring.py), `max_concurrency` at a time

Each row of the batch (its tokens up to the attention mask, its labels) is scored exactly as a harvest scores an
example — the same request, the same check that every echoed token is ours — and the rows' signals are stacked in
`[:, :-1][valid]` order. Off-policy training still reads a harvested cache (`distill cache`), which is reproducible
on resume; here the signal is a function of the text alone, so a resumed run asks again for the same text and, from
a deterministic server, gets the same answer. A failed request fails the step with the client's one-line error
after its retries; nothing of the step is applied.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distill.data.batch import Batch
from distill.data.formatting import Example
from distill.losses.signals import TopKSignal
from distill.recipe.api import ApiConfig
from distill.teachers.api.client import ApiClient
from distill.teachers.api.scoring import CAPTURE_TEMPERATURE, PATH, EchoScoring


class ApiTeacher:
    """A teacher source over an OpenAI-compatible endpoint that echo-scores text (`/v1/completions`, `echo`,
    `logprobs: k`, `max_tokens: 0`; vLLM does). Opens its client on construction; `close()` ends it."""

    def __init__(self, config: ApiConfig, tokenizer: Any, k: int):
        self.client = ApiClient(config)
        self.scoring = EchoScoring(config.model, tokenizer, k)
        self.description = f"{config.model} at {config.base_url.rstrip('/')} (top-{k} log-probs per token, live)"
        self.scored = 0  # sequences scored, for the logs

    def close(self) -> None:
        self.client.close()

    def signal(self, batch: Batch) -> TopKSignal:
        examples = [_example(batch, row) for row in range(batch.input_ids.shape[0])]
        answers = self.client.map(PATH, [self.scoring.payload(e) for e in examples])
        signals = [self.scoring.signal(self.scored + i, e, a) for i, (e, a) in
                   enumerate(zip(examples, answers, strict=True))]
        self.scored += len(examples)
        device = batch.input_ids.device
        stack = [torch.from_numpy(np.concatenate([getattr(s, name) for s in signals])).to(device)
                 for name in ("ids", "logprobs", "tail")]
        return TopKSignal(stack[0], stack[1], stack[2], capture_temperature=CAPTURE_TEMPERATURE)


def _example(batch: Batch, row: int) -> Example:
    """Row `row` of a right-padded batch as the example it was made from."""
    n = int(batch.attention_mask[row].sum())
    return Example(batch.input_ids[row, :n].tolist(), batch.labels[row, :n].tolist())
