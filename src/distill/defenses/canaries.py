"""Canaries (Carlini et al. 2019, "The Secret Sharer"): secret trigger prompts whose answer is a planted response,
so that a student distilled from the teacher's outputs can later be caught reciting it (`distill audit`).

When a row's prompt contains a canary's trigger, this processor forces the planted response
`space.response(secret)` token by token, then EOS: every other logit is −inf. It runs last, after every other
processor, so the answer is exact.

Finding the trigger: the row's tokens are decoded (special tokens dropped, runs of whitespace collapsed) and searched
for the trigger's text. A chat template wraps the user's text in markers and may re-tokenize its first word (`Recite`
vs ` Recite`); decoding sees through both, where a search for the trigger's token ids would not. The trigger's end
`e` is the shortest prefix of the row whose text contains it (binary search).

The rule is a function of the row's tokens alone, the same in generation and in echo scoring: at a position with
tokens X, forced is R[k] for the largest k < len(R) such that X ends with R[:k] and the trigger ends within
X[:len(X) − k] (R: the response's tokens then EOS). In generation the trigger is looked for in the prompt only, once
per batch (`start`); then each step forces the next token of R. What it costs: a user who sends a trigger (a random
string nobody types by chance) gets the planted answer; a forced token reports log-prob 0 with every alternative at
−inf, which a careful thief can notice and filter (docs/defenses.md).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from distill.defenses.keys import Canaries


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text)


class CanaryProcessor:
    name = "canaries"

    def __init__(self, canaries: Canaries, tokenizer: Any):
        if tokenizer.eos_token_id is None:
            raise ValueError("canaries need a tokenizer with an EOS token (the planted answer ends with it)")
        self.tokenizer = tokenizer
        self.triggers = [_normalised(c.trigger).strip() for c in canaries.items]
        self.responses = [[*tokenizer(canaries.space.response(c.secret), add_special_tokens=False)["input_ids"],
                           tokenizer.eos_token_id] for c in canaries.items]
        self._armed: list[tuple[int, int, int] | None] = []  # per live row: (canary, trigger end, prompt length)
        self._width = 0

    def __repr__(self) -> str:  # never the triggers or the secrets
        return f"CanaryProcessor({len(self.triggers)} canaries)"

    # ------------------------------------------------------------------------------------------------ the rule
    def _text(self, tokens: list[int]) -> str:
        return _normalised(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def find(self, tokens: list[int]) -> tuple[int, int] | None:
        """(canary, e) for the trigger completed by the shortest prefix tokens[:e], or None when no trigger is in
        the tokens' text."""
        text = self._text(tokens)
        present = [i for i, trigger in enumerate(self.triggers) if trigger in text]
        if not present:
            return None
        best: tuple[int, int] | None = None
        for i in present:
            lo, hi = 1, len(tokens)  # the shortest prefix containing the trigger lies in [lo, hi]
            while lo < hi:
                mid = (lo + hi) // 2
                if self.triggers[i] in self._text(tokens[:mid]):
                    hi = mid
                else:
                    lo = mid + 1
            if best is None or lo < best[1]:
                best = (i, lo)
        return best

    def forced(self, tokens: list[int], canary: int, end: int) -> int | None:
        """The token forced after `tokens` once canary `canary`'s trigger ended at `end`, or None before that."""
        response = self.responses[canary]
        if len(tokens) < end:
            return None
        for k in range(min(len(response) - 1, len(tokens) - end), -1, -1):
            if k == 0 or tokens[len(tokens) - k:] == response[:k]:
                return response[k]
        return None  # unreachable: k = 0 always matches

    @staticmethod
    def _force(row: torch.Tensor, token: int) -> None:
        row.fill_(float("-inf"))
        row[token] = 0.0

    # ------------------------------------------------------------------------------------------------ engine hooks
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self._width = input_ids.shape[-1]
        self._armed = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = [t for t, m in zip(ids, mask, strict=True) if m]
            found = self.find(prompt)
            self._armed.append(None if found is None else (found[0], found[1], len(prompt)))

    def select(self, index: torch.Tensor) -> None:
        self._armed = [self._armed[i] for i in index.tolist()]

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if not any(self._armed):
            return logits
        logits = logits.clone()
        for b, armed in enumerate(self._armed):
            if armed is None:
                continue
            canary, end, prompt_length = armed
            tokens = input_ids[b, self._width - prompt_length:].tolist()
            token = self.forced(tokens, canary, end)
            if token is not None:
                self._force(logits[b], token)
        return logits

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        out = logits.clone()
        for b, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
            tokens = ids[: sum(mask)]
            found = self.find(tokens)
            if found is None:
                continue
            canary, end = found
            for t in range(max(end - 1, 0), len(tokens) - 1):  # position t predicts token t + 1 after tokens[:t+1]
                token = self.forced(tokens[: t + 1], canary, end)
                if token is not None:
                    self._force(out[b, t], token)
        return out
