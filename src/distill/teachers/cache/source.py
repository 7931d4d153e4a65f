"""The teacher cache as a teacher source: each batch's signal (top-k or sampled) read from disk instead of a forward
pass."""

from __future__ import annotations

import torch

from distill.data.batch import Batch
from distill.errors import CacheError
from distill.losses.signals import SampledSignal, TopKSignal
from distill.teachers.cache.store import TeacherCache


class CachedTeacher:
    """Reads the signal of the batch's examples (a cache is keyed by the data set's example indices, so it serves
    only batches of that data set) and moves it to `device`."""

    def __init__(self, cache: TeacherCache, device: torch.device | str, name: str | None = None):
        """`name`: how the recipe names the cache, for the run summary (default: its folder)."""
        self.cache, self.device = cache, device
        self.description = f"cache {name or cache.root}"

    def signal(self, batch: Batch) -> TopKSignal | SampledSignal:
        if batch.examples is None:
            raise CacheError("teacher.cache: a teacher cache serves only batches of the data set it was built from; "
                             "these sequences were made during training. Use teacher.model")
        signal = self.cache.signal(batch.examples).to(self.device)
        targets = batch.n_targets()
        if signal.ids.shape[0] != targets:
            raise CacheError(f"teacher.cache: the cache holds {signal.ids.shape[0]} positions for this batch, the "
                             f"batch has {targets} targets; the cache does not belong to this data")
        return signal
