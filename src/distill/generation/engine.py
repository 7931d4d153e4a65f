"""Batched sampling from a local causal LM with a KV cache: what `distill generate` and `distill serve` run.

Rows are left-padded by hand (the shared tokenizer is never modified), positions count only real tokens, and only
the last position's logits are computed. A row that finishes leaves the batch — its slice of the KV cache is
dropped — so long and short rows do not pay for each other. Each row samples from its own random stream
(`sampling.py`), which is what makes a row's text independent of the batch it ran in.

`logits_processors` are applied to every step's logits before log-probs and sampling: the seam where serve-time
defenses (`distill.defenses`: watermarks, product of experts, antidistillation, canaries) plug in. Each is
`f(input_ids [rows, T], logits [rows, V]) -> logits`, where `input_ids` holds each row's prompt and generated tokens,
left-padded with the pad id to the batch's width: a processor that looks back over a context must stop at the row's
own tokens to stay batch-invariant. A stateful processor (one that runs a model of its own with a KV cache, or
remembers each row's prompt) may also have the hooks of `StatefulProcessor`: `start` when a batch starts, `select`
when finished rows leave it, and `score` for echo scoring — without `score`, scoring applies `f` at each position to
the row's own prefix, which is what generation gave it there. Log-probs reported are the log-softmax of the processed
logits at temperature 1 (as vLLM reports by default).

The slow twin: at temperature 0 the engine must agree with `transformers`' own `generate` (greedy); tested.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from distill.errors import ModelError
from distill.eval.generation import stop_token_ids
from distill.generation.sampling import SamplingParams, draw_uniforms, row_generator, top_logprobs
from distill.losses.choice import choose_tokens

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class StatefulProcessor(Protocol):
    """The optional hooks of a logits processor that keeps per-row state across the steps of a batch."""

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """A batch starts: its prompts, left-padded [rows, W], and their mask (1 on real tokens). The first call
        after it gets these rows' logits for the prompts' last position."""

    def select(self, index: torch.Tensor) -> None:
        """Finished rows left the batch: keep rows `index` (a long tensor on the engine's device), in that order."""

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Echo scoring: right-padded rows [rows, T] and the logits at every position [rows, T, V] → the logits
        this processor would have given there in generation (position t predicts token t + 1)."""


OnToken = Callable[[int, int, str], None]  # (request index, token id, new text piece)


@dataclass(frozen=True)
class GenRequest:
    prompt_ids: list[int]
    params: SamplingParams
    key: tuple[int, ...]  # the row's random stream: e.g. (seed, prompt id, sample index)


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # top-k (id, log-prob), best first; [] when only the chosen one was asked for


@dataclass
class GenResult:
    token_ids: list[int]  # what the model wrote, without the stop token (with the tokens of a stop string)
    text: str  # decoded, cut before a stop string
    finish_reason: str  # "stop" (stop token or string) or "length"
    prompt_tokens: int
    completion_tokens: int  # tokens produced, the stop token included
    logprobs: list[TokenLogprob] | None
    stop_token_id: int | None = None  # the stop token that ended it (finish "stop" by a token), else None


class _Row:
    """One request's progress through a batch."""

    def __init__(self, index: int, request: GenRequest):
        self.index, self.request = index, request
        self.generator = row_generator(request.key)
        self.ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if request.params.logprobs is not None else None
        self.text = ""
        self.emitted = 0  # characters of `text` already handed to on_token
        self.finish: str | None = None
        self.stop_token: int | None = None
        self.produced = 0
        self.cut = False  # the text was cut at a stop string (else it is decoded from `ids` at the end)


class Engine:
    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 16,
                 logits_processors: Sequence[LogitsProcessor] = ()):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size = max_batch_size
        self.logits_processors = list(logits_processors)
        self.stop_ids = stop_token_ids(model, tokenizer)
        if not self.stop_ids:
            raise ModelError("the tokenizer has no EOS token, so generation could not stop; set eos_token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.n_tokens = len(tokenizer)  # ids past this (padding rows of a wider output) are no token
        self.device = next(model.parameters()).device
        from distill.models import cache_argument  # transformers: loaded with the model, not with this module

        self._cache_name = cache_argument(model)

    # --------------------------------------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenRequest], on_token: OnToken | None = None) -> list[GenResult]:
        """Complete every request; results in the order given. Batches of up to max_batch_size rows, longest
        prompts together (less padding)."""
        for i, r in enumerate(requests):
            if not r.prompt_ids:
                raise ValueError(f"request {i}: empty prompt")
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
        results: list[GenResult | None] = [None] * len(requests)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for first in range(0, len(order), self.max_batch_size):
                    rows = [_Row(i, requests[i]) for i in order[first:first + self.max_batch_size]]
                    self._run(rows, on_token)
                    for row in rows:
                        results[row.index] = self._result(row)
        finally:
            self.model.train(was_training)
        return [r for r in results if r is not None]

    def _run(self, rows: list[_Row], on_token: OnToken | None) -> None:
        from transformers import DynamicCache

        width = max(len(r.request.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row.request.prompt_ids)
            ids[b, width - n:] = torch.tensor(row.request.prompt_ids)
            mask[b, width - n:] = 1
        for row in rows:
            if row.request.params.max_new_tokens == 0:
                row.finish = "length"
        live = [r for r in rows if r.finish is None]
        keep = [b for b, r in enumerate(rows) if r.finish is None]
        ids, mask = ids[keep].to(self.device), mask[keep].to(self.device)
        history = ids  # prompt + generated so far, for logits processors
        if live:
            for process in self.logits_processors:
                if hasattr(process, "start"):
                    process.start(ids, mask)
        cache = DynamicCache()
        step_ids, positions = ids, (mask.cumsum(-1) - 1).clamp_min(0)
        while live:
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1, **{self._cache_name: cache})
            logits = out.logits[:, -1, :].float()
            if logits.shape[-1] > self.n_tokens:
                logits[:, self.n_tokens:] = float("-inf")
            for process in self.logits_processors:
                logits = process(history, logits)
            chosen = self._choose(live, logits)
            done = self._advance(live, logits, chosen, on_token)
            history = torch.cat([history, chosen.unsqueeze(-1)], dim=-1)
            step_ids = chosen.unsqueeze(-1)
            positions = positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            if done:
                stay = [b for b, r in enumerate(live) if r.finish is None]
                if not stay:
                    break
                index = torch.tensor(stay, device=self.device)
                cache.batch_select_indices(index)
                for process in self.logits_processors:
                    if hasattr(process, "select"):
                        process.select(index)
                live = [live[b] for b in stay]
                step_ids, positions, mask, history = step_ids[index], positions[index], mask[index], history[index]

    def _choose(self, live: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        params = [r.request.params for r in live]
        temperature = torch.tensor([p.temperature for p in params], device=logits.device)
        top_p = torch.tensor([p.top_p for p in params], device=logits.device)
        uniforms = draw_uniforms([r.generator for r in live]).to(logits.device)
        return choose_tokens(logits, temperature, top_p, uniforms)

    def _advance(self, live: list[_Row], logits: torch.Tensor, chosen: torch.Tensor, on_token: OnToken | None) -> bool:
        """Record each row's new token; True when some row finished."""
        wanted = [r.request.params.logprobs for r in live]
        picked: list[float] = []
        tops: list[list[tuple[int, float]]] = []
        if any(k is not None for k in wanted):
            k = max(w or 0 for w in wanted)
            picked, tops = top_logprobs(torch.log_softmax(logits, dim=-1), chosen, k)
        finished = False
        for b, (row, token) in enumerate(zip(live, chosen.tolist(), strict=True)):
            row.produced += 1
            if token in self.stop_ids:
                row.finish, row.stop_token = "stop", token
            else:
                row.ids.append(token)
                if row.logprobs is not None:
                    row.logprobs.append(TokenLogprob(token, picked[b], tops[b][: row.request.params.logprobs or 0]))
                if row.request.params.stop or on_token is not None:
                    self._check_text(row)
                if row.finish is None and row.produced >= row.request.params.max_new_tokens:
                    row.finish = "length"
            if on_token is not None:
                self._emit(row, token, on_token)
            finished |= row.finish is not None
        return finished

    def _check_text(self, row: _Row) -> None:
        """Decode the row so far (only when it has stop strings or is streamed: decoding after every token is
        quadratic in its length) and end it at the first stop string."""
        stops = row.request.params.stop
        row.text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        hits = [i for i in (row.text.find(s) for s in stops) if i >= 0]
        if hits:
            row.text = row.text[:min(hits)]
            row.finish, row.cut = "stop", True

    def _emit(self, row: _Row, token: int, on_token: OnToken) -> None:
        """Hand on the text that is final: not a possible start of a stop string, not a half-decoded character."""
        text = row.text
        if row.finish is None:
            hold = max((len(s) - 1 for s in row.request.params.stop), default=0)
            end = len(text) - hold
            while end > row.emitted and text[end - 1] == "\ufffd":
                end -= 1
        else:
            end = len(text)
        if end > row.emitted or row.finish is not None:
            on_token(row.index, token, text[row.emitted:max(end, row.emitted)])
            row.emitted = max(end, row.emitted)

    def _result(self, row: _Row) -> GenResult:
        text = row.text if row.cut else self.tokenizer.decode(row.ids, skip_special_tokens=True)
        return GenResult(token_ids=row.ids, text=text, finish_reason=row.finish or "length",
                         prompt_tokens=len(row.request.prompt_ids), completion_tokens=row.produced,
                         logprobs=row.logprobs, stop_token_id=row.stop_token)

    # ------------------------------------------------------------------------------------------------ scoring
    def score(self, prompts: Sequence[list[int]], top_logprobs_k: int = 0,
              max_batch_tokens: int = 4096) -> list[list[TokenLogprob | None]]:
        """Echo scoring: each prompt token's log-prob given the tokens before it (None for the first), with the
        top-k alternatives at each position. Right-padded batches of about `max_batch_tokens` tokens."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        scored: list[list[TokenLogprob | None]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                first = 0
                while first < len(order):
                    width = max(len(prompts[order[first]]), 1)
                    rows = order[first:first + max(1, min(self.max_batch_size, max_batch_tokens // width))]
                    first += len(rows)
                    self._score_rows([prompts[i] for i in rows], top_logprobs_k, [scored[i] for i in rows])
        finally:
            self.model.train(was_training)
        return scored

    def _score_rows(self, prompts: list[list[int]], k: int, into: list[list[TokenLogprob | None]]) -> None:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, : len(p)] = torch.tensor(p, dtype=torch.long)
            mask[b, : len(p)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        if logits.shape[-1] > self.n_tokens:
            logits[..., self.n_tokens:] = float("-inf")
        for process in self.logits_processors:
            logits = _score_positions(process, ids, mask, logits, [len(p) for p in prompts])
        for b, p in enumerate(prompts):
            into[b].append(None)
            if len(p) < 2:
                continue
            logprobs = torch.log_softmax(logits[b, : len(p) - 1], dim=-1)
            picked, tops = top_logprobs(logprobs, torch.tensor(p[1:], device=logprobs.device), k)
            into[b].extend(TokenLogprob(t, v, top) for t, v, top in zip(p[1:], picked, tops, strict=True))


def _score_positions(process: LogitsProcessor, ids: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor,
                     lengths: list[int]) -> torch.Tensor:
    """One processor over every scored position: its own `score` when it has one, else the plain call at each
    position with the row's own prefix (what generation gave it there). Padding positions are left as they were."""
    if hasattr(process, "score"):
        return process.score(ids, mask, logits)
    out = logits.clone()
    for b, n in enumerate(lengths):
        for t in range(n - 1):
            out[b, t] = process(ids[b: b + 1, : t + 1], logits[b, t: t + 1])[0]
    return out
