"""Reading a finished cache: the manifest, its checks, and random access to any example's signal.

Layout of a cache folder:

    manifest.json         what the cache is (format, setup, shards with checksums, bytes_per_token); written last
    vocab_order.npy       the vocabulary ordered by frequency in the data (the id code of the records)
    shard-NNNNN.bin       records, one per example (codec.py for the top-k scheme, sampled_codec.py for sampled)
    shard-NNNNN.idx       where each record is (see shard.py)
    shard-NNNNN.json      the shard's seal (its entry in the manifest, kept so a rebuild can trust it)

Opening checks that every shard is there, whole and unchanged (sizes and sha256 against the manifest) before
anything is trained on it. Records are read through memory maps, so only the examples asked for are paged in.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.checksum import file_sha256
from distill.errors import CacheError
from distill.losses.names import SampleWeights
from distill.losses.signals import SampledSignal, TopKSignal, importance_weights
from distill.teachers.cache import codec, sampled_codec
from distill.teachers.cache.fingerprint import TOPK_SCHEME, setup_differences
from distill.teachers.cache.sampled_codec import SampledRecord
from distill.teachers.cache.shard import read_index

FORMAT = "distill-teacher-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUILD = "build.json"  # the setup of a build in progress; replaced by the manifest when it completes
VOCAB = "vocab_order.npy"
# how the tail log-mass was computed: a logsumexp over the tokens outside the top-k. Caches from before this field
# stored log(1 − Σ top-k), −inf below ~6e-8 (read as 2^-24, see losses/support.py): usable, and worth rebuilding.
TAIL_METHOD = "logsumexp"


def sampled_signal(record: SampledRecord, scheme: dict[str, Any], capture_temperature: float,
                   estimator: SampleWeights = "counts") -> SampledSignal:
    """A decoded sampled record as the loss takes it: its rows with their importance weights under `scheme` (the
    weights are chosen when reading, so one cache serves either estimator)."""
    if record.entropy is not None and estimator != "counts":  # a `counts` record: −H(p) in log p's place
        raise ValueError(f"{estimator} weights need each draw's log p, which a cache built with --encoding counts "
                         "does not keep")
    ids, counts, logprobs = (torch.from_numpy(a) for a in (record.ids, record.counts, record.logprobs))
    t = scheme["proposal_temperature"]
    log_z = None if t == 1.0 or record.log_z is None else torch.from_numpy(record.log_z)
    weights = importance_weights(counts, logprobs, log_z, scheme["draws"], t, estimator)
    return SampledSignal(ids=ids, logprobs=logprobs, weights=weights, capture_temperature=capture_temperature)


def describe_scheme(manifest: dict[str, Any]) -> str:
    """`k=64`, or `sampled: 32 draws, proposal t=1` — how `distill cache` and `distill check` name what a cache
    holds."""
    scheme = manifest.get("scheme", TOPK_SCHEME)
    if scheme["name"] == "sampled":
        return f"sampled: {scheme['draws']} draws, proposal t={scheme['proposal_temperature']:g}"
    return f"k={manifest['k']}"


def verify_shard(root: Path, seal: dict[str, Any], check_hash: bool = True) -> str | None:
    """Why shard `seal` is unusable (missing, truncated, changed), or None when it is intact."""
    for file, size, sha in (("data", "bytes", "sha256"), ("index", "index_bytes", "index_sha256")):
        path = root / seal[file]
        if not path.exists():
            return f"{path.name} is missing"
        actual = path.stat().st_size
        if actual != seal[size]:
            return f"{path.name} has {actual:,} bytes, the manifest says {seal[size]:,} (truncated or overwritten)"
        if check_hash and file_sha256(path) != seal[sha]:
            return f"{path.name} is corrupted (its sha256 does not match the manifest)"
    return None


class TeacherCache:
    """A finished, verified cache. `signal(examples)` gives the teacher's signal (top-k, or sampled: `scheme`) at
    every target position of those examples, concatenated in order — the rows the objective's `[:, :-1][mask]`
    selects."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self.vocab_order = np.load(root / VOCAB)
        n = manifest["setup"]["data"]["n_examples"]
        self._shard = np.full(n, -1, dtype=np.int64)
        self._offset = np.zeros(n, dtype=np.int64)
        self._nbytes = np.zeros(n, dtype=np.int64)
        self._maps: list[np.memmap | None] = []
        for i, seal in enumerate(manifest["shards"]):
            rows = read_index(root / seal["index"])
            self._shard[rows["example"]] = i
            self._offset[rows["example"]] = rows["offset"]
            self._nbytes[rows["example"]] = rows["nbytes"]
            self._maps.append(np.memmap(root / seal["data"], dtype=np.uint8, mode="r") if seal["bytes"] else None)

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> TeacherCache:
        root = Path(path)
        if not root.is_dir():
            raise CacheError(f"teacher.cache: no such folder: {root}; build it with "
                             f"`distill cache RECIPE --out {root}`")
        if not (root / MANIFEST).exists():
            if (root / BUILD).exists():
                raise CacheError(f"teacher.cache: {root} is incomplete (its build was interrupted); run "
                                 "`distill cache` again with the same recipe and --out to finish it")
            raise CacheError(f"teacher.cache: {root} is not a teacher cache (no {MANIFEST})")
        manifest = json.loads((root / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise CacheError(f"teacher.cache: {root / MANIFEST} is not a distill teacher-cache manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"teacher.cache: {root} has format version {manifest.get('format_version')}; this "
                             f"distill reads version {FORMAT_VERSION}; rebuild it with `distill cache`")
        if manifest.get("tail") != TAIL_METHOD:
            warnings.warn(f"teacher.cache: {root} was built before tails were computed exactly (its tails below ~6e-8 "
                          "read as 2^-24); rebuild it with `distill cache --overwrite` for exact reverse-type losses",
                          stacklevel=2)
        for seal in manifest["shards"]:
            problem = verify_shard(root, seal, check_hash=verify)
            if problem:
                raise CacheError(f"teacher.cache: {problem}; the cache is refused. Run `distill cache` again with "
                                 f"the same recipe and --out {root} to rebuild the damaged shard")
        return cls(root, manifest)

    @property
    def k(self) -> int:
        return self.manifest["k"]

    @property
    def capture_temperature(self) -> float:
        return self.manifest["capture_temperature"]

    @property
    def scheme(self) -> dict[str, Any]:
        """What the cache stores: `{"name": "topk"}` (also every cache from before schemes were recorded), or
        `{"name": "sampled", "draws": N, "proposal_temperature": t}`."""
        return self.manifest.get("scheme", TOPK_SCHEME)

    def check_setup(self, wanted: dict[str, Any]) -> None:
        """Refuse the cache for a setup it was not built for, naming every difference."""
        problems = setup_differences(self.manifest["setup"], wanted)
        if problems:
            raise CacheError(f"teacher.cache: {self.root} was built for a different setup: " + "; ".join(problems))

    def missing(self, examples: list[int]) -> list[int]:
        index = np.asarray(examples, dtype=np.int64)
        return index[self._shard[index] < 0].tolist()

    def check_covers(self, examples: list[int]) -> None:
        """A cache built with --planned-only holds only the examples of one plan; refuse a run that visits others."""
        missing = self.missing(examples)
        if missing:
            raise CacheError(f"teacher.cache: {len(missing)} examples this run visits are not in {self.root} (first: "
                             f"{missing[0]}); it was built for another seed, batch size or number of steps. Rebuild "
                             "it for this recipe (`distill cache`), or without --planned-only")

    def read(self, example: int) -> codec.Signal | SampledRecord:
        shard = int(self._shard[example])
        if shard < 0:
            raise CacheError(f"teacher.cache: example {example} is not in {self.root} (it was built for a subset "
                             "of the data; rebuild it without --planned-only, or keep the recipe's plan)")
        start = int(self._offset[example])
        record = self._maps[shard][start:start + int(self._nbytes[example])]
        decode = sampled_codec.decode if self.scheme["name"] == "sampled" else codec.decode
        try:
            return decode(memoryview(record), self.vocab_order)
        except codec.CorruptRecord as exc:
            raise CacheError(f"teacher.cache: {self.manifest['shards'][shard]['data']}, example {example}: {exc}; "
                             "the shard changed after the cache was opened") from None

    def signal(self, examples: list[int], estimator: SampleWeights = "counts") -> TopKSignal | SampledSignal:
        """`estimator`: how a sampled cache's draws are weighted (`importance_weights`); a top-k cache ignores it."""
        parts = [self.read(e) for e in examples]
        if self.scheme["name"] == "sampled":
            return sampled_signal(sampled_codec.concat(parts), self.scheme, self.capture_temperature, estimator)
        return TopKSignal(ids=torch.from_numpy(np.concatenate([p.ids for p in parts])),
                          logprobs=torch.from_numpy(np.concatenate([p.logprobs for p in parts])),
                          tail_logmass=torch.from_numpy(np.concatenate([p.tail for p in parts])),
                          capture_temperature=self.capture_temperature)

