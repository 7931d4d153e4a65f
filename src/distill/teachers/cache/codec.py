"""How one sequence's top-k teacher signal becomes bytes, and back.

A record holds, for each of n token positions, the k most likely token ids, their log-probabilities and the
log-mass outside them. Two encodings share one framing:

`q8` (the default, ~100 bytes/token at k = 64) — lossless for the ids, quantised for the values:
- ids: each token's k ids are mapped to their rank in a vocabulary order sorted by how often the id occurs in the
  data (frequent tokens → small numbers, whatever the vocabulary's size or order), sorted, and stored as gaps. Gaps
  are split into byte planes (low bytes together, high bytes together), which zstd's entropy stage codes well.
- values: one uint8 code per entry for how far below the token's most likely entry it lies: steps of 1/32 nat for
  the first 4 nats, then 1/8 nat to 19.9 nats, and deeper entries clamp there. The error in a probability is at most
  1.6% (relative) where p ≥ p_max · e⁻⁴ and 6.4% below it — tiny in absolute terms, zero-mean, and far below the
  noise of a one-hot label. The top entry and the tail log-mass are stored as float16.
- the decoded entries come back in descending order of log-probability, like `TopKSignal.from_logits`.

`exact` — the slow twin: ids as int32 and values as float32 in rank order, plus the float32 tail. Parity tests hold
`q8` to it, and `distill cache --encoding exact` writes it for anyone who wants bit-exact values.

Framing: a 16-byte header (magic, n, k, encoding, id bytes, stream count) then, per stream, its zstd frame length
(uint32) and the frames. zstd frames carry their own content checksum, so a flipped bit fails to decode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import zstandard

ENCODINGS = ("q8", "exact")
# what a record's header says it holds: top-k in either encoding, then the sampled scheme's (sampled_codec.py)
RECORD_KINDS = (*ENCODINGS, "sampled-q8", "sampled-exact", "sampled-counts")
_MAGIC = b"DTK1"
_HEADER = struct.Struct("<4sIHBBI")  # magic, n, k, record kind (RECORD_KINDS index), id bytes, stream count
_LEVEL = 10  # zstd level: ~3% larger than 19 and several times faster to build; decoding speed is the same

# The value quantiser: code c ↦ distance below the top entry, in nats.
FINE_STEP, FINE_CODES, COARSE_STEP = 1.0 / 32.0, 128, 1.0 / 8.0
FINE_RANGE = FINE_STEP * FINE_CODES  # 4 nats
MAX_DISTANCE = FINE_RANGE + COARSE_STEP * (255 - FINE_CODES)  # 19.875 nats


class CorruptRecord(ValueError):
    """A record whose bytes do not decode (truncated, overwritten, or not a record at all)."""


@dataclass
class Signal:
    """The top-k signal of n positions as plain arrays: ids (n, k) int64, logprobs (n, k) float32 in descending
    order, tail (n,) float32 log-mass outside the top-k."""

    ids: np.ndarray
    logprobs: np.ndarray
    tail: np.ndarray

    def __len__(self) -> int:
        return self.ids.shape[0]


def quantize(distance: np.ndarray) -> np.ndarray:
    """uint8 codes of distances (≥ 0, in nats) below the top entry."""
    d = np.clip(distance, 0.0, MAX_DISTANCE)
    fine = np.rint(d / FINE_STEP)
    coarse = FINE_CODES + np.rint((d - FINE_RANGE) / COARSE_STEP)
    return np.where(d < FINE_RANGE, fine, coarse).clip(0, 255).astype(np.uint8)


def dequantize(codes: np.ndarray) -> np.ndarray:
    c = codes.astype(np.float32)
    return np.where(c <= FINE_CODES, c * FINE_STEP, FINE_RANGE + (c - FINE_CODES) * COARSE_STEP).astype(np.float32)


def inverse_permutation(order: np.ndarray) -> np.ndarray:
    """rank → id turned into id → rank (`vocab_rank` from `vocab_order`)."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def id_bytes(vocab_size: int) -> int:
    """Bytes per id plane: enough for any gap in a vocabulary of `vocab_size`."""
    return max(1, (max(vocab_size - 1, 1).bit_length() + 7) // 8)


def planes(values: np.ndarray, width: int) -> list[bytes]:
    little = values.astype("<u4").view(np.uint8).reshape(-1, 4)
    return [little[:, i].tobytes() for i in range(width)]


def unplane(streams: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(int(np.prod(shape)), dtype=np.int64)
    for i, plane in enumerate(streams):
        out |= np.frombuffer(plane, dtype=np.uint8).astype(np.int64) << (8 * i)
    return out.reshape(shape)


def encode(signal: Signal, vocab_rank: np.ndarray, encoding: str = "q8") -> bytes:
    """One record's bytes. `vocab_rank[id]` is the id's position in the frequency order (a permutation of the
    vocabulary); only `q8` uses it."""
    n, k = signal.ids.shape
    width = id_bytes(len(vocab_rank))
    if encoding == "exact":
        streams = [signal.ids.astype("<i4").tobytes(), signal.logprobs.astype("<f4").tobytes(),
                   signal.tail.astype("<f4").tobytes()]
    elif encoding == "q8":
        ranks = vocab_rank[signal.ids]
        order = np.argsort(ranks, axis=1, kind="stable")
        ranks = np.take_along_axis(ranks, order, axis=1)
        gaps = np.diff(ranks, axis=1, prepend=-1) - 1
        top = signal.logprobs.max(axis=1).astype(np.float16)
        distance = top.astype(np.float32)[:, None] - np.take_along_axis(signal.logprobs, order, axis=1)
        streams = [*planes(gaps.ravel(), width), quantize(distance).tobytes(),
                   *planes(top.view(np.uint16), 2), *planes(signal.tail.astype(np.float16).view(np.uint16), 2)]
    else:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    return frame(streams, n, k, RECORD_KINDS.index(encoding), width)


def frame(streams: list[bytes], n: int, k: int, kind: int, width: int) -> bytes:
    """One record from its streams: the header, the zstd frame lengths, the frames. `kind` indexes RECORD_KINDS."""
    compressor = zstandard.ZstdCompressor(level=_LEVEL, write_checksum=True)
    frames = [compressor.compress(s) for s in streams]
    header = _HEADER.pack(_MAGIC, n, k, kind, width, len(frames))
    lengths = struct.pack(f"<{len(frames)}I", *(len(f) for f in frames))
    return header + lengths + b"".join(frames)


def unframe(record: bytes | memoryview) -> tuple[int, int, str, int, list[bytes]]:
    """(n, k, record kind, id bytes, streams) of a record; `CorruptRecord` when it does not decode."""
    record = memoryview(record)
    try:
        magic, n, k, kind, width, count = _HEADER.unpack_from(record)
        if magic != _MAGIC or kind >= len(RECORD_KINDS):
            raise CorruptRecord("not a teacher-cache record")
        lengths = struct.unpack_from(f"<{count}I", record, _HEADER.size)
        offset = _HEADER.size + 4 * count
        decompressor = zstandard.ZstdDecompressor()
        streams = []
        for length in lengths:
            streams.append(decompressor.decompress(record[offset:offset + length]))
            offset += length
    except (struct.error, zstandard.ZstdError) as exc:
        raise CorruptRecord(f"record does not decode ({exc})") from None
    return n, k, RECORD_KINDS[kind], width, streams


def decode(record: bytes | memoryview, vocab_order: np.ndarray) -> Signal:
    """The top-k signal of one record. `vocab_order[rank]` is the id at that rank (the inverse of `vocab_rank`)."""
    n, k, kind, width, streams = unframe(record)
    if kind not in ENCODINGS:
        raise CorruptRecord(f"a {kind} record where a top-k record was expected (the cache's scheme is not top-k)")
    if kind == "exact":
        ids = np.frombuffer(streams[0], dtype="<i4").reshape(n, k).astype(np.int64)
        logprobs = np.frombuffer(streams[1], dtype="<f4").reshape(n, k).copy()
        return Signal(ids, logprobs, np.frombuffer(streams[2], dtype="<f4").copy())
    gaps = unplane(streams[:width], (n, k))
    ranks = np.cumsum(gaps + 1, axis=1) - 1
    distance = dequantize(np.frombuffer(streams[width], dtype=np.uint8).reshape(n, k))
    top = unplane(streams[width + 1:width + 3], (n,)).astype(np.uint16).view(np.float16).astype(np.float32)
    tail = unplane(streams[width + 3:width + 5], (n,)).astype(np.uint16).view(np.float16).astype(np.float32)
    order = np.argsort(distance, axis=1, kind="stable")  # descending log-probability; ties by frequency rank
    ids = vocab_order[np.take_along_axis(ranks, order, axis=1)]
    logprobs = top[:, None] - np.take_along_axis(distance, order, axis=1)
    return Signal(ids.astype(np.int64), logprobs, tail)
