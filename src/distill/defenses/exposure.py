"""Exposure controls: what the API lets out about the teacher's distribution, as opposed to what it samples.

* `max_top_logprobs`: a request's `logprobs` / `top_logprobs` is capped at this (0: only the chosen token's
  log-prob). Logit distillation from an API needs the alternatives; a thief who only needs sampled text does not.
* `logprob_noise`: Gaussian noise of this standard deviation on every reported log-prob (chosen and alternatives,
  generated and echo-scored); sampling is untouched. The noise is *seeded by what it describes* — the exposure seed,
  the tokens before the position and the token — so asking the same question again returns the same noisy number:
  averaging repeated queries does not remove it (averaging over *different* contexts still does, slowly).
* `temperature`: forced on every request (and on `distill generate`), whatever the client asks.

These functions know nothing of the engine's types: positions are any objects with `token_id`, `logprob` and `top`
(a list of (id, log-prob)), rebuilt with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections.abc import Sequence
from typing import Any, TypeVar

from distill.defenses.keys import ExposureKey

P = TypeVar("P")


def _digest(*parts: bytes) -> bytes:
    return hashlib.blake2b(b"".join(parts), digest_size=16).digest()


class Exposure:
    def __init__(self, key: ExposureKey | None = None):
        self.key = key or ExposureKey()
        self._seed = struct.pack("<q", self.key.seed)

    @property
    def active(self) -> bool:
        k = self.key
        return k.max_top_logprobs is not None or k.logprob_noise > 0 or k.temperature is not None

    def cap(self, k: int | None) -> int | None:
        """The alternatives a request gets: its own ask, at most `max_top_logprobs` (None stays None: none asked)."""
        limit = self.key.max_top_logprobs
        return k if k is None or limit is None else min(k, limit)

    def temperature(self, requested: float) -> float:
        return requested if self.key.temperature is None else self.key.temperature

    def noise(self, context: bytes, token: int) -> float:
        """N(0, sd²) for (context, token), from a keyed hash (Box–Muller on two 53-bit uniforms)."""
        h = _digest(self._seed, context, struct.pack("<q", token))
        u1 = (int.from_bytes(h[:8], "little") >> 11) / float(1 << 53)
        u2 = (int.from_bytes(h[8:], "little") >> 11) / float(1 << 53)
        return self.key.logprob_noise * math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)

    def report(self, context: Sequence[int], tokens: Sequence[int], positions: Sequence[P | None]) -> list[P | None]:
        """The positions as the API may show them: alternatives cut to the cap, every log-prob noised. `tokens[i]`
        is the token at position i (its log-prob described by positions[i], or None where nothing predicts it);
        `context`: the tokens before the first (the prompt, for generated tokens; nothing, for an echoed prompt)."""
        limit, sd = self.key.max_top_logprobs, self.key.logprob_noise
        if limit is None and sd <= 0:
            return list(positions)
        state = _digest(b"ctx", *(struct.pack("<q", t) for t in context))
        out: list[Any] = []
        for token, position in zip(tokens, positions, strict=True):
            if position is None:
                out.append(None)
            else:
                top = list(position.top)[: limit] if limit is not None else list(position.top)  # type: ignore[attr-defined]
                if sd > 0:
                    top = [(i, lp + self.noise(state, i)) for i, lp in top]
                    logprob = position.logprob + self.noise(state, position.token_id)  # type: ignore[attr-defined]
                else:
                    logprob = position.logprob  # type: ignore[attr-defined]
                out.append(dataclasses.replace(position, logprob=logprob, top=top))  # type: ignore[type-var]
            state = _digest(state, struct.pack("<q", token))
        return out
