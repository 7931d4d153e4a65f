"""The green-list watermark of Kirchenbauer et al. 2023 ("A Watermark for Large Language Models", ICML 2023), as a
logits processor for `distill serve` / `distill generate` and as the membership test `forensics/` scores with.

At each step the previous `context_width` tokens (the window, h in the paper) and a secret key seed a pseudo-random
split of the vocabulary: each token is *green* with probability γ, and δ is added to the green tokens' logits, so the
text leans green. Anyone holding the key can count green tokens; without it the text looks ordinary.

Where this departs from the paper: the paper seeds a generator from the window and takes the first γ|V| tokens of a
random permutation (exactly γ|V| green tokens per window). Here each (window, token) pair is green when a keyed
64-bit hash of (key, window, token), read as a number in [0, 1), falls below γ: the green list's *size* varies
around γ|V|, but every (window, token) pair is green with probability exactly γ, independently of every other pair,
for a key drawn at random. That independence is what the detector's binomial test assumes (`forensics/`), and the
hash is vectorised over the whole vocabulary in a few integer operations on the logits' device.

Key material (the secret) never leaves this module's objects: `describe()` gives the knobs and a key id (a hash of
the secret that cannot be inverted to it), which is what provenance records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from distill.defenses.keys import key_id

_MASK64 = (1 << 64) - 1
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finaliser constants
_GOLDEN = 0x9E3779B97F4A7C15


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 torch stores (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 lanes (torch's >> is arithmetic on signed integers)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 lanes (multiplication wraps modulo 2^64, as two's complement does). Works in
    place on one copy and one scratch buffer: over [rows, vocab] lanes, allocating a fresh tensor per operation
    cost 10× the arithmetic."""
    x = x.clone()
    scratch = torch.empty_like(x)
    for bits, factor in ((30, _M1), (27, _M2), (31, None)):
        torch.bitwise_right_shift(x, bits, out=scratch)
        scratch.bitwise_and_((1 << (64 - bits)) - 1)
        x.bitwise_xor_(scratch)
        if factor is not None:
            x.mul_(_signed(factor))
    return x


def key_seed(secret: str) -> int:
    """The 64-bit seed of a secret (any string; `distill defenses keygen` writes 64 hex digits)."""
    return _signed(int.from_bytes(hashlib.sha256(b"distill-watermark:" + secret.encode()).digest()[:8], "little"))


def window_hashes(windows: torch.Tensor, seed: int) -> torch.Tensor:
    """One int64 per window: a keyed hash of its tokens in order. windows: [N, h] int64 → [N]."""
    state = torch.full(windows.shape[:-1], seed, dtype=torch.long, device=windows.device)
    for j in range(windows.shape[-1]):
        state = mix64(state ^ mix64(windows[..., j].long() + _signed(_GOLDEN * (j + 1))))
    return state


def token_hashes(tokens: torch.Tensor) -> torch.Tensor:
    """The key-independent half of a pair's hash, one per token id (cached for the whole vocabulary)."""
    return mix64(tokens.long() * _signed(_GOLDEN) + 1)


def pair_bits(hashes: torch.Tensor, token_hash: torch.Tensor) -> torch.Tensor:
    """53 uniform bits per (window, token) pair, as int64 in [0, 2^53): green when below γ·2^53 (broadcast: hashes
    [N, 1] with token_hash [V] gives [N, V])."""
    x = mix64(hashes ^ token_hash)
    return x.bitwise_right_shift_(11).bitwise_and_((1 << 53) - 1)


def pair_uniforms(hashes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The number in [0, 1) that decides whether `tokens` is green after a window with hash `hashes`."""
    return pair_bits(hashes, token_hashes(tokens)).double() / float(1 << 53)


_VOCAB_HASHES: dict[tuple[int, str], torch.Tensor] = {}


def _vocab_hashes(vocab_size: int, device: torch.device) -> torch.Tensor:
    key = (vocab_size, str(device))
    if key not in _VOCAB_HASHES:
        _VOCAB_HASHES[key] = token_hashes(torch.arange(vocab_size, device=device))
    return _VOCAB_HASHES[key]


@dataclass(frozen=True)
class GreenList:
    """Which (window, token) pairs are green under one key: the part of the watermark both sides share."""

    secret: str = field(repr=False)
    context_width: int = 1
    gamma: float = 0.25

    def __post_init__(self) -> None:
        if self.context_width < 1:
            raise ValueError("context_width must be at least 1")
        if not 0 < self.gamma < 1:
            raise ValueError("gamma must lie strictly between 0 and 1")
        if not self.secret:
            raise ValueError("the watermark key is empty")

    @property
    def seed(self) -> int:
        return key_seed(self.secret)

    @property
    def threshold(self) -> int:
        """A pair is green when its 53 bits fall below this: P = threshold / 2^53 = γ up to 2^-53."""
        return round(self.gamma * (1 << 53))

    def mask(self, windows: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Green tokens after each window: windows [N, h] → bool [N, vocab_size]."""
        vocab = _vocab_hashes(vocab_size, windows.device)
        return pair_bits(window_hashes(windows, self.seed).unsqueeze(-1), vocab) < self.threshold

    def is_green(self, windows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Whether each token is green after its window: windows [N, h], tokens [N] → bool [N]. The same pairs
        as `mask` (tested), one per row."""
        return pair_bits(window_hashes(windows, self.seed), token_hashes(tokens)) < self.threshold

    def scored_pairs(self, token_ids: list[int]) -> list[tuple[tuple[int, ...], int]]:
        """Every (window, token) pair of a text, in order: the positions with a whole window before them."""
        h = self.context_width
        return [(tuple(token_ids[t - h:t]), token_ids[t]) for t in range(h, len(token_ids))]


class WatermarkProcessor:
    """Adds δ to the green tokens' logits at every step (the paper's soft watermark). A row's window is its own last
    `context_width` tokens (prompt, then what it wrote), so the text does not depend on the batch; a row shorter
    than the window is left unmarked at that step. In the engine's left-padded batches, `start` / `select` (the
    engine's hooks) tell it each row's own length, so a short row's window never reaches into the padding; `score`
    marks every position of echo-scored rows as generation did."""

    name = "watermark"

    def __init__(self, green: GreenList, delta: float = 2.0):
        if delta < 0:
            raise ValueError("delta must be ≥ 0")
        self.green, self.delta = green, delta
        self._lengths: torch.Tensor | None = None  # each live row's prompt length (real tokens), from `start`
        self._width = 0

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self._lengths, self._width = attention_mask.sum(-1), input_ids.shape[-1]

    def select(self, index: torch.Tensor) -> None:
        if self._lengths is not None:
            self._lengths = self._lengths[index]

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        h = self.green.context_width
        if input_ids.shape[-1] < h:
            return logits
        mask = self.green.mask(input_ids[:, -h:], logits.shape[-1])
        if self._lengths is not None and self._lengths.shape[0] == input_ids.shape[0]:
            real = self._lengths + (input_ids.shape[-1] - self._width)  # each row's own tokens so far
            mask &= (real >= h).unsqueeze(-1)
        return logits + self.delta * mask.to(logits.dtype)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Right-padded rows [rows, T], logits at every position [rows, T, V]: position t (predicting t + 1) is
        marked by the window ending at t, once t + 1 ≥ h."""
        h, (rows, width) = self.green.context_width, input_ids.shape
        if width < h:
            return logits
        windows = input_ids.unfold(1, h, 1).reshape(-1, h)  # the window ending at t, for t = h − 1 … T − 1
        mask = self.green.mask(windows, logits.shape[-1]).view(rows, width - h + 1, -1)
        out = logits.clone()
        out[:, h - 1:] += self.delta * mask.to(logits.dtype)
        return out

    def describe(self) -> dict[str, object]:
        return {"kind": "watermark", "scheme": "kirchenbauer-2023 (keyed pair hash)",
                "key_id": key_id(self.green.secret), "context_width": self.green.context_width,
                "gamma": self.green.gamma, "delta": self.delta}
