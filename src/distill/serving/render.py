"""Responses shaped like OpenAI's: the objects, the two log-prob formats, usage, and the streamed chunks.

Token strings are what a client needs to find the token again (`distill`'s own API teacher maps them back to ids,
teachers/api/logprobs.py): a token whose bytes are whole UTF-8 is written as that text (` the`, as vLLM and OpenAI
write it); one that holds part of a character, or whose text is another token's vocabulary entry, is written as its
own vocabulary entry (`âĢ`, `Ã©`), which maps back to the id without ambiguity. The chat format also carries
each token's exact `bytes`. A log-prob of −inf (a token a logits processor forbade) is written as −9999.0, as vLLM
does: JSON has no infinity.
"""

from __future__ import annotations

import codecs
import math
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from distill.generation.engine import GenResult, TokenLogprob
from distill.teachers.api.logprobs import TokenMap

FLOOR = -9999.0


class TokenText:
    """Each id's text and bytes, from the vocabulary decoded once."""

    def __init__(self, tokenizer: Any):
        self.map = TokenMap(tokenizer)
        self.tokenizer = tokenizer

    def bytes(self, token_id: int) -> bytes:
        found = self.map.id_bytes[token_id] if 0 <= token_id < len(self.map.id_bytes) else None
        return found if found is not None else b""

    @lru_cache(maxsize=1 << 16)  # noqa: B019 — one TokenText per server, kept for its life
    def text(self, token_id: int) -> str:
        """The token as text when that text names it and no other token, else its vocabulary entry. (`é` as text
        is SmolLM2's two-byte token, but as a vocabulary entry it is the one-byte token 0xE9: a client that looks
        strings up in the vocabulary first would take the wrong one.)"""
        raw = self.bytes(token_id)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and self.map.id_of(text) == token_id:
            return text
        return str(self.tokenizer.convert_ids_to_tokens(token_id))


def finite(value: float) -> float:
    return FLOOR if math.isnan(value) or value < FLOOR else value


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ------------------------------------------------------------------------------------------------ log-probs
def legacy_logprobs(tt: TokenText, ids: Sequence[int], positions: Sequence[TokenLogprob | None],
                    offset: int = 0) -> dict[str, Any]:
    """/v1/completions' format: parallel lists `tokens`, `token_logprobs`, `top_logprobs` (a {token: logprob} dict
    per position: the top-k and the chosen token, as vLLM returns them; None where nothing predicts the token) and
    `text_offset` (each token's first character in the choice's text, counted from `offset`)."""
    tokens, chosen, tops, offsets = [], [], [], []
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = offset
    for token_id, position in zip(ids, positions, strict=True):
        tokens.append(tt.text(token_id))
        offsets.append(chars)
        chars += len(decoder.decode(tt.bytes(token_id)))
        if position is None:
            chosen.append(None)
            tops.append(None)
            continue
        chosen.append(finite(position.logprob))
        top = {tt.text(i): finite(lp) for i, lp in position.top}
        top.setdefault(tt.text(token_id), finite(position.logprob))
        tops.append(top)
    return {"tokens": tokens, "token_logprobs": chosen, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(tt: TokenText, positions: Sequence[TokenLogprob]) -> dict[str, Any]:
    """/v1/chat/completions' format: `content`, one entry per token with its text, log-prob, bytes and the
    top alternatives ([] when top_logprobs was not asked for)."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": tt.text(token_id), "logprob": finite(logprob), "bytes": list(tt.bytes(token_id))}

    return {"content": [{**entry(p.token_id, p.logprob), "top_logprobs": [entry(i, lp) for i, lp in p.top]}
                        for p in positions], "refusal": None}


# ------------------------------------------------------------------------------------------------ whole answers
def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_choice(index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None
                      ) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_choice(tt: TokenText, index: int, result: GenResult) -> dict[str, Any]:
    logprobs = chat_logprobs(tt, result.logprobs) if result.logprobs is not None else None
    return {"index": index, "message": {"role": "assistant", "content": result.text, "refusal": None},
            "logprobs": logprobs, "finish_reason": result.finish_reason}


def envelope(kind: str, response_id: str, created: int, model: str, choices: list[dict[str, Any]],
             usage_: dict[str, int] | None) -> dict[str, Any]:
    """The object around the choices: `text_completion`, `chat.completion` or their `.chunk`s."""
    body: dict[str, Any] = {"id": response_id, "object": kind, "created": created, "model": model,
                            "choices": choices, "system_fingerprint": None}
    if usage_ is not None or not kind.endswith("chunk"):
        body["usage"] = usage_
    return body
