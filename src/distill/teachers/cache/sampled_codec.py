"""How one sequence's sampled teacher signal becomes bytes, and back (the `sampled` cache scheme).

Per position the scheme keeps the distinct tokens of `draws` draws from the teacher (see `SampledSignal`): how many
there are (m, one byte), their ids, how often each was drawn (one byte each), the teacher's log-probability of each,
and — when the proposal is flatter than the teacher (t ≠ 1) — the proposal's log-normaliser log Σ_v p_v^(1/t), which
the importance weights need. At t = 1 the weights are the counts / draws, stored exactly: quantising the
log-probabilities then changes only the reported loss value, never the gradient.

Ids are coded as codec.py codes top-k ids (frequency rank, sorted, gaps in byte planes), counts as bytes, and the
log-probabilities either as `q8` (one byte below the position's top entry, plus the top as float16; the log-normaliser
as float16) or `exact` (float32). Records share codec.py's framing (header, checksummed zstd frames).

`counts` stores no log-probabilities at all, only the teacher's entropy H(p) per position (float16). It serves the
one case where the gradient never reads log p — the teacher as its own proposal (t = 1) with count weights — and
keeps the loss's value unbiased: there the value's Σ_j w_j log p_j has expectation −H(p), so each entry is given its
position's −H(p) in log p's place (a value of lower variance, the same gradient). Inclusion weights and t ≠ 1 need
the real log p and refuse such a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distill.teachers.cache import codec

MAX_DRAWS = 255  # counts and per-position widths are one byte each
ENCODINGS = (*codec.ENCODINGS, "counts")  # `counts`: ids, counts and H(p) only (t = 1, count weights)


@dataclass
class SampledRecord:
    """The sampled signal of n positions as plain arrays, padded to the widest position m: ids (n, m) int64,
    logprobs (n, m) float32, counts (n, m) int64 (0 on padding), log_z (n,) float32 or None (t = 1), entropy (n,)
    float32 H(p) or None (what the `counts` encoding stores; read back from one, `logprobs` holds −H(p))."""

    ids: np.ndarray
    logprobs: np.ndarray
    counts: np.ndarray
    log_z: np.ndarray | None
    entropy: np.ndarray | None = None

    def __len__(self) -> int:
        return self.ids.shape[0]


def concat(records: list[SampledRecord]) -> SampledRecord:
    """The records' positions one after another, padded to the widest position of any (id 0, count 0)."""
    width = max((r.ids.shape[1] for r in records), default=0)

    def stacked(name: str) -> np.ndarray:
        return np.concatenate([np.pad(getattr(r, name), ((0, 0), (0, width - r.ids.shape[1]))) for r in records])

    def joined(name: str) -> np.ndarray | None:
        parts = [getattr(r, name) for r in records]
        return None if not parts or any(p is None for p in parts) else np.concatenate(parts)

    return SampledRecord(stacked("ids"), stacked("logprobs").astype(np.float32), stacked("counts"), joined("log_z"),
                         joined("entropy"))


def encode(record: SampledRecord, vocab_rank: np.ndarray, encoding: str = "q8") -> bytes:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if encoding == "counts" and (record.log_z is not None or record.entropy is None):
        raise ValueError("the counts encoding holds draws from the teacher itself (t = 1) with their entropy; this "
                         "record has " + ("a flatter proposal" if record.log_z is not None else "no entropy"))
    n, m = record.ids.shape
    live = record.counts > 0
    widths = live.sum(1)
    if n and (widths.max(initial=0) > MAX_DRAWS or record.counts.max(initial=0) > MAX_DRAWS):
        raise ValueError(f"a sampled record holds at most {MAX_DRAWS} draws per position")
    # live entries first in each row, in ascending frequency rank (padding sorts last)
    ranks = np.where(live, vocab_rank[record.ids], np.iinfo(np.int64).max)
    order = np.argsort(ranks, axis=1, kind="stable")
    ranks, counts = np.take_along_axis(ranks, order, 1), np.take_along_axis(record.counts, order, 1)
    logprobs = np.take_along_axis(record.logprobs, order, 1)
    live = counts > 0
    gaps = np.diff(np.where(live, ranks, 0), axis=1, prepend=-1) - 1
    width = codec.id_bytes(len(vocab_rank))
    streams = [widths.astype(np.uint8).tobytes(), *codec.planes(gaps[live], width), counts[live].astype(np.uint8)
               .tobytes()]
    log_z = record.log_z if record.log_z is not None else np.zeros(0, dtype=np.float32)
    if encoding == "counts":
        streams += codec.planes(record.entropy.astype(np.float16).view(np.uint16), 2)
    elif encoding == "exact":
        streams += [logprobs[live].astype("<f4").tobytes(), log_z.astype("<f4").tobytes()]
    else:
        top = np.where(live, logprobs, -np.inf).max(axis=1, initial=-np.inf)
        top = np.where(np.isfinite(top), top, 0.0).astype(np.float16)
        distance = top.astype(np.float32)[:, None] - logprobs
        streams += [codec.quantize(distance[live]).tobytes(), *codec.planes(top.view(np.uint16), 2),
                    *codec.planes(log_z.astype(np.float16).view(np.uint16), 2)]
    return codec.frame(streams, n, m, codec.RECORD_KINDS.index(f"sampled-{encoding}"), width)


def decode(data: bytes | memoryview, vocab_order: np.ndarray) -> SampledRecord:
    n, m, kind, width, streams = codec.unframe(data)
    if not kind.startswith("sampled-"):
        raise codec.CorruptRecord(f"a {kind} top-k record where a sampled record was expected (the cache's scheme "
                                  "is not sampled)")
    widths = np.frombuffer(streams[0], dtype=np.uint8).astype(np.int64)
    live = np.arange(m)[None, :] < widths[:, None]
    entries = int(widths.sum())
    step = np.zeros((n, m), dtype=np.int64)
    step[live] = codec.unplane(streams[1:1 + width], (entries,)) + 1
    ranks = np.cumsum(step, axis=1) - 1
    ids = np.where(live, vocab_order[np.clip(ranks, 0, len(vocab_order) - 1)], 0).astype(np.int64)
    counts = np.zeros((n, m), dtype=np.int64)
    counts[live] = np.frombuffer(streams[1 + width], dtype=np.uint8)
    logprobs = np.zeros((n, m), dtype=np.float32)
    rest = streams[2 + width:]
    if kind == "sampled-counts":
        entropy = codec.unplane(rest[0:2], (n,)).astype(np.uint16).view(np.float16).astype(np.float32)
        logprobs[live] = np.repeat(-entropy, widths)  # the value's expectation at t = 1 (module doc)
        return SampledRecord(ids, logprobs, counts, None, entropy)
    if kind == "sampled-exact":
        logprobs[live] = np.frombuffer(rest[0], dtype="<f4")
        log_z = np.frombuffer(rest[1], dtype="<f4").copy()
    else:
        top = codec.unplane(rest[1:3], (n,)).astype(np.uint16).view(np.float16).astype(np.float32)
        logprobs[live] = np.repeat(top, widths) - codec.dequantize(np.frombuffer(rest[0], dtype=np.uint8))
        log_z = codec.unplane(rest[3:5], (len(rest[3]),)).astype(np.uint16).view(np.float16).astype(np.float32)
    return SampledRecord(ids, logprobs, counts, log_z if len(log_z) else None)
