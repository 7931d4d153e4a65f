"""Who writes the completions: a local Hugging Face model (batched, `engine.py`) or an OpenAI-compatible endpoint
(`distill serve`, vLLM, SGLang, a commercial API — the way to scale generation past one machine).

Both take a list of (prompt, sample index) and report finished samples through `on_done` as they come, so the
caller can journal them: the local backend a batch at a time, in order; the API backend one answer at a time, in the
order the server finishes them. Every sample is seeded by (seed, prompt id, sample index). Locally that makes its
text independent of batching and resumes; over an API it is sent as the request's `seed`, which `distill serve`
honours the same way and other servers honour as far as their batching allows (vLLM: per-request generators).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distill.generation.engine import Engine, GenRequest
from distill.generation.prompts import Prompt, prompt_ids
from distill.generation.sampling import SamplingParams
from distill.recipe.generate import SamplingConfig

Work = tuple[Prompt, int]  # (prompt, sample index)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


Done = Callable[[list[tuple[Prompt, int, Completion]]], None]


def request_seed(seed: int, prompt_id: int, sample: int) -> int:
    """The seed an API request carries: a 31-bit hash of the sample's key (servers take a signed 32-bit int)."""
    digest = hashlib.sha256(f"{seed},{prompt_id},{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class LocalBackend:
    def __init__(self, engine: Engine, sampling: SamplingConfig, batch_size: int):
        self.engine, self.sampling, self.batch_size = engine, sampling, batch_size
        self.params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                     max_new_tokens=sampling.max_new_tokens, stop=tuple(sampling.stop))
        self._ids: dict[int, list[int]] = {}

    def run(self, work: Sequence[Work], on_done: Done) -> None:
        for first in range(0, len(work), self.batch_size):
            chunk = work[first:first + self.batch_size]
            requests = [GenRequest(self._prompt_ids(p), self.params, (self.sampling.seed, p.id, s)) for p, s in chunk]
            results = self.engine.generate(requests)
            on_done([(p, s, Completion(r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens))
                     for (p, s), r in zip(chunk, results, strict=True)])

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if prompt.id not in self._ids:
            self._ids[prompt.id] = prompt_ids(prompt, self.engine.tokenizer)
        return self._ids[prompt.id]


class ApiBackend:
    def __init__(self, client: Any, model: str, sampling: SamplingConfig):
        self.client, self.model, self.sampling = client, model, sampling

    def run(self, work: Sequence[Work], on_done: Done) -> None:
        chat = [p.messages is not None for p, _ in work]
        for kind_is_chat in (True, False):
            part = [w for w, c in zip(work, chat, strict=True) if c == kind_is_chat]
            if not part:
                continue
            path = "/v1/chat/completions" if kind_is_chat else "/v1/completions"
            payloads = [self._payload(p, s) for p, s in part]
            for index, answer in self.client.map_unordered(path, payloads):
                prompt, sample = part[index]
                on_done([(prompt, sample, _completion(answer, kind_is_chat))])

    def _payload(self, prompt: Prompt, sample: int) -> dict[str, Any]:
        s = self.sampling
        payload: dict[str, Any] = {"model": self.model, "temperature": s.temperature, "top_p": s.top_p,
                                   "max_tokens": s.max_new_tokens, "n": 1,
                                   "seed": request_seed(s.seed, prompt.id, sample)}
        if s.stop:
            payload["stop"] = list(s.stop)
        if prompt.messages is not None:
            payload["messages"] = prompt.messages
        else:
            payload["prompt"] = prompt.text
        return payload


def _completion(answer: dict[str, Any], chat: bool) -> Completion:
    from distill.teachers.api import TeacherApiError

    try:
        choice = answer["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        usage = answer.get("usage") or {}
        return Completion(text or "", str(choice.get("finish_reason") or "stop"), int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)))
    except (KeyError, IndexError, TypeError, ValueError):
        raise TeacherApiError("the server's answer has no choices[0] text; is it an OpenAI-compatible "
                              f"{'chat ' if chat else ''}completions endpoint?") from None
