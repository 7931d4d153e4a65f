"""The harvest: `distill cache RECIPE` with `teacher.api` scores every example of the build with an OpenAI-compatible
endpoint and writes the answers into the ordinary teacher-cache format, so that training takes the top-k path it
takes for any cache (`CachedTeacher`), unchanged. Documented in docs/api.md ("The harvest").

`ApiSignals` is a `SignalSource` (teachers/cache/live.py): build.py plans the shards, keeps their journals, seals
them and writes the manifest exactly as for a live teacher; this module only turns pending examples into signals,
one echo-scoring request each (scoring.py), `teacher.api.max_concurrency` in flight (`ApiClient.map_unordered`).

Answers come back in any order; they are written in example order. An answer that arrives before those ahead of it
waits in memory, and is written as soon as the ones ahead are. Why not journal each answer as it comes: the shards
of a harvest are then the same bytes whatever the order answers came in or where it was killed (their sha256s in the
manifest reproduce; a resumed harvest is byte-identical to an uninterrupted one, as a live build's is), at the price
of the answers waiting at a kill -9 — about `max_concurrency` of them, more behind a request that is being retried —
which the next run asks again. Nothing written is ever asked again: a resumed run requests exactly the examples
missing from the journals.

The manifest names the teacher as the API: `source: api:MODEL` (what a training recipe's `teacher.api.model` is
compared with), and under `api` the base URL (which the recipe's validator keeps free of credentials), the model,
and the server's own `/v1/models` entry for it when it has one. The key is never written: it lives in the client
only, which scrubs it from every message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distill.data.dataset import TokenizedData
from distill.recipe.api import ApiConfig
from distill.teachers.api.client import ApiClient, TeacherApiError
from distill.teachers.api.scoring import PATH, EchoScoring
from distill.teachers.cache import codec

# the keys of a /v1/models entry that say what is served (not when the list was made: vLLM's `created` is "now")
_SERVED_KEYS = ("id", "object", "owned_by", "root", "parent", "max_model_len")


class ApiSignals:
    """The signals of a data set's examples, from an endpoint that echo-scores them (`connect` opens one)."""

    def __init__(self, client: ApiClient, config: ApiConfig, tokenizer: Any, data: TokenizedData, k: int,
                 served: dict[str, Any] | None = None):
        self.client, self.data = client, data
        self.scoring = EchoScoring(config.model, tokenizer, k)
        self.identity = {"api": {"base_url": config.base_url.rstrip("/"), "model": config.model, "served": served}}

    @classmethod
    @contextmanager
    def connect(cls, config: ApiConfig, tokenizer: Any, data: TokenizedData, k: int) -> Iterator[ApiSignals]:
        """A source talking to `config`'s endpoint (the key is read here: a missing one fails before any work)."""
        with ApiClient(config) as client:
            yield cls(client, config, tokenizer, data, k, served=served_model(client, config.model))

    def signals(self, groups: list[list[int]]) -> Iterator[tuple[int, codec.Signal]]:
        """The first example alone (a server that refuses the request fails once, with a hint, not eight times),
        then the rest `max_concurrency` at a time, yielded in order (see the module doc)."""
        order = [e for group in groups for e in group]
        if not order:
            return
        first = self.data.examples[order[0]]
        try:
            answer = self.client.post(PATH, self.scoring.payload(first))
        except TeacherApiError as exc:
            if not any(f"answered HTTP {status}" in str(exc) for status in (400, 422)):
                raise
            raise TeacherApiError(f"{exc}. The harvest asks {PATH} to score a prompt: echo: true, logprobs: "
                                  f"{self.scoring.k} (teacher.top_k; many servers allow at most 20), max_tokens: 0"
                                  ) from None
        yield order[0], self.scoring.signal(order[0], first, answer)
        waiting: dict[int, codec.Signal] = {}
        next_up = 1
        payloads = (self.scoring.payload(self.data.examples[e]) for e in order[1:])
        for index, answer in self.client.map_unordered(PATH, payloads):
            number = order[index + 1]
            waiting[index + 1] = self.scoring.signal(number, self.data.examples[number], answer)
            while next_up in waiting:
                yield order[next_up], waiting.pop(next_up)
                next_up += 1


def served_model(client: ApiClient, model: str) -> dict[str, Any] | None:
    """The server's `/v1/models` entry for `model` (what it serves under that name), or None when it lists none or
    cannot be asked: the manifest records it when available, and the harvest never depends on it."""
    answer = client.get_once("/v1/models")
    entries = answer.get("data") if answer is not None else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("id") == model:
            return {key: entry[key] for key in _SERVED_KEYS if key in entry}
    return None
