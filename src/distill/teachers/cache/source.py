"""The teacher cache as a teacher source: each batch's signal (top-k or sampled) read from disk instead of a forward
pass — decoded on a background thread one step ahead when the batch source can say what comes next."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from distill.data.batch import Batch
from distill.errors import CacheError
from distill.losses.names import SampleWeights
from distill.losses.signals import SampledSignal, TopKSignal
from distill.teachers.cache.store import TeacherCache

Signal = TopKSignal | SampledSignal


class CachedTeacher:
    """Reads the signal of the batch's examples (a cache is keyed by the data set's example indices, so it serves
    only batches of that data set) and moves it to `device`.

    Prefetching: `prefetch(micro-batches)` starts decoding those micro-batches' signals on one background thread
    (zstd and numpy release the GIL, so decoding overlaps the training step); `signal` takes a finished one when its
    examples match, else decodes in place — the same bytes, the same signal, either way. Only the last two
    prefetched steps are kept, so a step that never comes costs nothing but its memory until then."""

    def __init__(self, cache: TeacherCache, device: torch.device | str, name: str | None = None,
                 prefetch: bool = True, estimator: SampleWeights = "counts"):
        """`name`: how the recipe names the cache, for the run summary (default: its folder). `estimator`: how a
        sampled cache's draws are weighted (`teacher.sample_weights`)."""
        self.cache, self.device, self.estimator = cache, device, estimator
        self.description = f"cache {name or cache.root}"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cache-decode") if prefetch else None
        self._pending: dict[tuple[int, ...], Future[Signal]] = {}
        self._generations: deque[set[tuple[int, ...]]] = deque(maxlen=2)
        self.prefetched = 0  # signals served from the background thread (tests and logs)

    def prefetch(self, micro_batches: list[list[int]]) -> None:
        """Start decoding these micro-batches' signals (their example indices) in the background."""
        if self._pool is None:
            return
        keys = {tuple(examples) for examples in micro_batches}
        self._generations.append(keys)
        keep = set().union(*self._generations)
        for key in [k for k in self._pending if k not in keep]:
            self._pending.pop(key).cancel()
        for key in keys - self._pending.keys():
            self._pending[key] = self._pool.submit(self.cache.signal, list(key), self.estimator)

    def signal(self, batch: Batch) -> Signal:
        if batch.examples is None:
            raise CacheError("teacher.cache: a teacher cache serves only batches of the data set it was built from; "
                             "these sequences were made during training. Use teacher.model")
        future = self._pending.pop(tuple(batch.examples), None)
        if future is not None:
            self.prefetched += 1
        signal = future.result() if future is not None else self.cache.signal(batch.examples, self.estimator)
        signal = signal.to(self.device)
        targets = batch.n_targets()
        if signal.ids.shape[0] != targets:
            raise CacheError(f"teacher.cache: the cache holds {signal.ids.shape[0]} positions for this batch, the "
                             f"batch has {targets} targets; the cache does not belong to this data")
        return signal

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
