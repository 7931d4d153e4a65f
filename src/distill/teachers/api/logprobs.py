"""From an OpenAI-compatible answer's log-probs to a `TopKSignal` on our tokenizer's ids. Documented in docs/api.md
("From API log-probs to a top-k signal").

1. `parse_logprobs(response)` reads either shape into one list of `Position`s (chosen token, its logprob, the top
   alternatives):
   - `/v1/completions` (legacy, as vLLM returns it): `choices[i].logprobs` = {`tokens`, `token_logprobs`,
     `top_logprobs`: [{token: logprob}, …]}; with `echo` the first position's logprob and alternatives are null
     (nothing predicts the first token);
   - `/v1/chat/completions`: `choices[i].logprobs.content[j]` = {`token`, `logprob`, `bytes`,
     `top_logprobs`: [{`token`, `logprob`, `bytes`}, …]}.
2. `TokenMap(tokenizer)` maps a returned token to our id: by its `bytes` when the server sends them, else by the
   token string as a vocabulary entry (`Ġthe`), else by the string's UTF-8 bytes (` the`, how vLLM and OpenAI
   write tokens). Our vocabulary is decoded to bytes once: byte-level BPE tokens through the GPT-2 bytes↔unicode
   table, SentencePiece tokens with `▁` as a space and `<0xNN>` as one byte. Tokens that are not unique as bytes
   (two of our ids decode to the same bytes) cannot be found by bytes and are refused when only bytes name them.
3. `to_topk_signal(positions, tokenizer)` checks that the chosen tokens are our tokenization of their own text (the
   whole sequence: `tokenizer(text)` against the mapped chosen ids) and stacks the alternatives into a `TopKSignal`
   with no stored tail: an API gives only the top-N, so `TopKSignal.tail()` derives 1 − Σ top-N and floors what fp32
   cannot resolve.

A token that maps to no id, or a chosen sequence that our tokenizer splits differently, is refused with one message
(`TokenizerMismatch`): the tokenizers differ, where, and what to do instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from distill.losses.signals import TopKSignal
from distill.teachers.api.client import TeacherApiError

WHAT_TO_DO = ("use a teacher that shares the student's tokenizer, or distil at the text level instead (`distill "
              "generate` the teacher's answers and train on them)")


class TokenizerMismatch(TeacherApiError):
    """The API's tokens are not our tokenizer's: a token we do not have, or a text we split differently."""


@dataclass(frozen=True)
class Alternative:
    token: str
    logprob: float
    bytes: bytes | None = None


@dataclass(frozen=True)
class Position:
    """One returned token: what was chosen (or echoed), its logprob, and the top alternatives at that position,
    most likely first. `logprob` and `top` are None only at an echoed prompt's first token."""

    token: str
    logprob: float | None
    top: tuple[Alternative, ...] | None
    bytes: bytes | None = None


# ---------------------------------------------------------------------------------------------------------- parsing

def parse_logprobs(response: Mapping[str, Any], choice: int = 0) -> list[Position]:
    """The positions of `response["choices"][choice]`, from a `/v1/completions` or `/v1/chat/completions` answer."""
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list) or not choices:
        raise TeacherApiError("the answer has no `choices` list: check that the server is OpenAI-compatible")
    if not 0 <= choice < len(choices) or not isinstance(choices[choice], Mapping):
        raise TeacherApiError(f"the answer has no choice {choice} (it has {len(choices)})")
    logprobs = choices[choice].get("logprobs")
    if not isinstance(logprobs, Mapping):
        raise TeacherApiError(f"choice {choice} has no `logprobs` object: ask for them (`logprobs: N` on "
                              "/v1/completions, `logprobs: true, top_logprobs: N` on /v1/chat/completions)")
    if "content" in logprobs:
        return _parse_chat(logprobs["content"], choice)
    if "tokens" in logprobs:
        return _parse_completions(logprobs, choice)
    raise TeacherApiError(f"choice {choice}: `logprobs` has neither `content` (chat) nor `tokens` (completions)")


def _parse_chat(content: Any, choice: int) -> list[Position]:
    if not isinstance(content, list):
        raise TeacherApiError(f"choice {choice}: `logprobs.content` is not a list")
    positions = []
    for j, item in enumerate(content):
        where = f"choice {choice}, position {j}"
        if not isinstance(item, Mapping):
            raise TeacherApiError(f"{where}: `logprobs.content[{j}]` is not an object")
        top = item.get("top_logprobs")
        if not isinstance(top, list):
            raise TeacherApiError(f"{where}: `top_logprobs` is missing or not a list (ask with top_logprobs: N)")
        alternatives = []
        for a, alt in enumerate(top):
            if not isinstance(alt, Mapping):
                raise TeacherApiError(f"{where}: `top_logprobs[{a}]` is not an object")
            alternatives.append(Alternative(_token(alt.get("token"), f"{where}, top_logprobs[{a}]"),
                                            _logprob(alt.get("logprob"), f"{where}, top_logprobs[{a}]"),
                                            _bytes(alt.get("bytes"), f"{where}, top_logprobs[{a}]")))
        positions.append(Position(_token(item.get("token"), where), _logprob(item.get("logprob"), where),
                                  _sorted(alternatives), _bytes(item.get("bytes"), where)))
    return positions


def _parse_completions(logprobs: Mapping[str, Any], choice: int) -> list[Position]:
    tokens, chosen, tops = logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
    for name, value in (("tokens", tokens), ("token_logprobs", chosen), ("top_logprobs", tops)):
        if not isinstance(value, list):
            raise TeacherApiError(f"choice {choice}: `logprobs.{name}` is missing or not a list")
    if not len(tokens) == len(chosen) == len(tops):
        raise TeacherApiError(f"choice {choice}: `logprobs` lists differ in length (tokens {len(tokens)}, "
                              f"token_logprobs {len(chosen)}, top_logprobs {len(tops)})")
    positions = []
    for j, (token, logprob, top) in enumerate(zip(tokens, chosen, tops, strict=True)):
        where = f"choice {choice}, position {j}"
        token = _token(token, where)
        if j == 0 and logprob is None and top is None:  # echo: nothing predicts the first token
            positions.append(Position(token, None, None))
            continue
        if not isinstance(top, Mapping):
            raise TeacherApiError(f"{where}: `top_logprobs[{j}]` is missing or not a {{token: logprob}} object")
        alternatives = [Alternative(_token(t, where), _logprob(lp, f"{where}, top_logprobs[{t!r}]"))
                        for t, lp in top.items()]
        positions.append(Position(token, _logprob(logprob, where), _sorted(alternatives)))
    return positions


def _sorted(alternatives: list[Alternative]) -> tuple[Alternative, ...]:
    return tuple(sorted(alternatives, key=lambda a: -a.logprob))


def _token(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TeacherApiError(f"{where}: the token is missing or not a string ({value!r})")
    return value


def _logprob(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TeacherApiError(f"{where}: the logprob is missing or not a number ({value!r})")
    if not math.isfinite(value) or value > 1e-4:
        raise TeacherApiError(f"{where}: the logprob {value!r} is not a finite number ≤ 0")
    return float(min(value, 0.0))


def _bytes(value: Any, where: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256
                                              for b in value):
        raise TeacherApiError(f"{where}: `bytes` is not a list of byte values (0–255)")
    return bytes(value)


# ---------------------------------------------------------------------------------------------------------- mapping

@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes→unicode table (byte-level BPE writes each byte as one printable character)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenMap:
    """Our tokenizer's vocabulary, by token string and by bytes (decoded once)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = dict(tokenizer.get_vocab())
        size = max(len(tokenizer), max(self.vocab.values(), default=-1) + 1)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        sentencepiece = any(t is not None and "▁" in t for t in tokens)
        self.id_bytes: list[bytes | None] = [None if t is None else _token_bytes(t, sentencepiece) for t in tokens]
        self.by_bytes: dict[bytes, int] = {}
        self.ambiguous: set[bytes] = set()
        for i, b in enumerate(self.id_bytes):
            if b is None or b in self.ambiguous:
                continue
            if b in self.by_bytes:
                self.ambiguous.add(b)
                del self.by_bytes[b]
            else:
                self.by_bytes[b] = i

    def id_of(self, token: str, token_bytes: bytes | None = None) -> int | None:
        """Our id for a returned token: by its bytes when given, else as a vocabulary entry, else by its UTF-8."""
        if token_bytes is not None:
            found = self.by_bytes.get(token_bytes)
            if found is not None or token_bytes in self.ambiguous:
                return found if found is not None else self.vocab.get(token)
        if token in self.vocab:
            return self.vocab[token]
        return self.by_bytes.get(token.encode("utf-8"))

    def shown(self, i: int) -> str:
        return repr(self.tokenizer.convert_ids_to_tokens(i))


def _token_bytes(token: str, sentencepiece: bool) -> bytes:
    if sentencepiece:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                return bytes([int(token[3:5], 16)])
            except ValueError:
                pass
        return token.replace("▁", " ").encode("utf-8")
    table = _unicode_to_byte()
    if all(c in table for c in token):
        return bytes(table[c] for c in token)
    return token.encode("utf-8")  # an added token written as plain text


def _refuse(position: int, token: str, what: str) -> TokenizerMismatch:
    return TokenizerMismatch(f"the teacher's tokenizer differs from ours: at position {position} the API's token "
                             f"{token!r} {what}; {WHAT_TO_DO}")


def chosen_ids(positions: Sequence[Position], tokenizer: Any | TokenMap) -> list[int]:
    """Our ids of the chosen tokens, checked against our tokenizer's split of the same text (see the module doc)."""
    tmap = tokenizer if isinstance(tokenizer, TokenMap) else TokenMap(tokenizer)
    ids = []
    for j, p in enumerate(positions):
        i = tmap.id_of(p.token, p.bytes)
        if i is None:
            raise _refuse(j, p.token, "is not in our vocabulary")
        ids.append(i)
    # the text is cut at the last whole character: an answer stopped by max_tokens may end inside one
    end = len(ids)
    while end > 0:
        try:
            text = b"".join(tmap.id_bytes[i] or b"" for i in ids[:end]).decode("utf-8")
            break
        except UnicodeDecodeError:
            end -= 1
    ours = list(tmap.tokenizer(text, add_special_tokens=False)["input_ids"]) if end else []
    for j in range(end):
        if j >= len(ours) or ours[j] != ids[j]:
            there = f"our tokenizer makes {tmap.shown(ours[j])} there" if j < len(ours) else "ours ends before it"
            raise _refuse(j, positions[j].token, f"(our {tmap.shown(ids[j])}) is not how we split the same text: "
                                                 f"{there}")
    if len(ours) > end:
        raise TokenizerMismatch(f"the teacher's tokenizer differs from ours: the API's tokens end at position {end}, "
                                f"where our tokenizer makes {tmap.shown(ours[end])}; {WHAT_TO_DO}")
    return ids


def to_topk_signal(positions: Sequence[Position], tokenizer: Any | TokenMap, k: int | None = None,
                   capture_temperature: float = 1.0) -> TopKSignal:
    """A `TopKSignal` with one row per position that has alternatives (an echoed prompt's first token has none), in
    order: `ids` (N, k) and `logprobs` (N, k) float32, most likely first, and no stored tail (`tail()` derives it).

    `k` defaults to the fewest alternatives any position has; a position with more keeps its `k` most likely (vLLM
    adds the chosen token to a completion's `top_logprobs` when it is not among them: it is dropped so). A position
    with fewer than an explicit `k` is refused: padding cannot be done right (a padded id would repeat a row's id or
    stand for a token the teacher never ranked, and a −inf logprob makes a p · log p term NaN in the losses).
    `capture_temperature` is the temperature the server's log-probs are at (1.0: servers report the raw
    distribution)."""
    tmap = tokenizer if isinstance(tokenizer, TokenMap) else TokenMap(tokenizer)
    chosen_ids(positions, tmap)
    rows = [(j, p) for j, p in enumerate(positions) if p.top is not None]
    if not rows:
        raise TeacherApiError("the answer has no position with top log-probs: ask for them (top_logprobs / logprobs)")
    widths = [len(p.top) for _, p in rows]
    if k is None:
        k = min(widths)
    if k < 1:
        j = rows[widths.index(min(widths))][0]
        raise TeacherApiError(f"position {j} has no top log-probs: ask for top_logprobs ≥ 1")
    ids, logprobs = [], []
    for j, p in rows:
        if len(p.top) < k:
            raise TeacherApiError(f"position {j} has {len(p.top)} top log-probs, fewer than k = {k}: ask the server "
                                  f"for top_logprobs ≥ {k}, or take a smaller k")
        row = []
        for alt in p.top[:k]:
            i = tmap.id_of(alt.token, alt.bytes)
            if i is None:
                raise _refuse(j, alt.token, "(a top alternative) is not in our vocabulary")
            row.append(i)
        if len(set(row)) < k:
            raise _refuse(j, p.top[row.index(next(i for i in row if row.count(i) > 1))].token,
                          "and another of the top alternatives are the same token of ours")
        ids.append(row)
        logprobs.append([alt.logprob for alt in p.top[:k]])
    return TopKSignal(ids=torch.tensor(ids, dtype=torch.long), logprobs=torch.tensor(logprobs, dtype=torch.float32),
                      tail_logmass=None, capture_temperature=capture_temperature)
