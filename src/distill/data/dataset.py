"""Build the tokenized training set of a recipe, and the deterministic batch plan that walks it.

The plan is a pure function of (seed, step): the examples of optimizer step `s` are positions
`s·B … (s+1)·B − 1` of an endless stream that visits the data in a fresh seeded permutation each epoch. So resuming
needs only the step number, and 1 process or N processes see exactly the same global batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from distill.data.example_stream import ExampleStream
from distill.data.formatting import Example, use_chat_template
from distill.data.identity import sha256_json, tokenizer_identity
from distill.data.normalize import check_splits, read_source, read_training_records
from distill.data.records import Picks
from distill.data.sources import Records
from distill.data.token_store import META, TokenStore, source_sha256, store_key, store_root, write_store
from distill.errors import DataError
from distill.recipe import DataConfig


@dataclass
class TokenizedData:
    examples: Sequence[Example]  # a list, or a `TokenStore` read through memory maps
    format: str
    dropped: int  # examples with nothing left to learn after truncation

    @property
    def n_targets(self) -> int:
        if isinstance(self.examples, TokenStore):
            return self.examples.n_targets
        return sum(e.n_targets for e in self.examples)


def tokenize_data(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> TokenizedData:
    """Every record tokenized (problems name the record's file and line); `dropped` counts the examples left with
    nothing to learn after truncation to `max_length`. With `data.token_cache` (the default) the result is read
    from, or first written to, a token store keyed by the tokenizer, the settings and the source's bytes
    (data/token_store.py): later runs and other processes memory-map it instead of tokenizing again."""
    use_chat_template(tokenizer, cfg.chat_template)  # before the tokenizer's identity keys the store
    check_splits(cfg)  # also when the tokens are in the store: a store written before splits were checked
    if not cfg.token_cache:
        return _tokenize(split_validation(read_training_records(cfg), cfg)[0], cfg, tokenizer)
    root = _store(cfg, tokenizer)
    if not (root / META).exists():
        train, held = split_validation(read_training_records(cfg), cfg)
        stream = ExampleStream(train, cfg, tokenizer)  # written as it is tokenized: never all in memory as lists
        write_store(root, stream, lambda: {"data_format": stream.format, "dropped": stream.dropped,
                                           "train": cfg.describe()},
                    segmented=stream.segmented, accept=lambda: _check_some(stream, train, cfg))
        if held is not None:  # stored now, so no later start reads the whole source again to find them
            _store_validation(held, cfg, tokenizer)
    store = TokenStore(root)
    return TokenizedData(store, store.meta["data_format"], store.meta["dropped"])


def _store(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, part: str = "train") -> Path:
    """The token store of the training examples (`part` "train") or of the validation examples: keyed by the data
    settings, the tokenizer and the bytes of the sources they are read from."""
    separate = part == "validation" and cfg.validation is not None
    sources = [source_sha256(p) for p in ([cfg.validation] if separate else [s.path for s in cfg.sources()])]
    settings = cfg.model_dump(mode="json", exclude={"token_cache"})
    if part != "train":
        settings["part"] = part
    return store_root() / store_key(settings, sha256_json(sources), tokenizer_identity(tokenizer)["sha256"])


def _tokenize(records: Records, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> TokenizedData:
    stream = ExampleStream(records, cfg, tokenizer)
    examples = list(stream)
    _check_some(stream, records, cfg)
    return TokenizedData(examples, stream.format, dropped=stream.dropped)


def _check_some(stream: ExampleStream, records: Records, cfg: DataConfig) -> None:
    if not stream.kept:
        raise DataError(f"data.train: {cfg.describe()} yields no trainable tokens at max_length={cfg.max_length} "
                        f"({len(records)} records, format {stream.format}); check the data or raise data.max_length")


def split_validation(records: Records, cfg: DataConfig) -> tuple[Records, Records | None]:
    """(training records, held-out records): `data.validation_fraction` of the records, chosen by a permutation
    seeded with `data.mixture_seed`, are held out and never trained on; without a fraction, (records, None)."""
    if cfg.validation_fraction <= 0:
        return records, None
    n_held = max(1, round(len(records) * cfg.validation_fraction))
    if n_held >= len(records):
        raise DataError(f"data.validation_fraction: {cfg.validation_fraction:g} of {len(records)} records leaves "
                        "none to train on")
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(cfg.mixture_seed))
    held = torch.zeros(len(records), dtype=torch.bool)
    held[order[:n_held]] = True  # both parts in file order, as integer arrays (never a tuple per record)
    return (Records.picked(Picks([records], torch.nonzero(~held).squeeze(1).numpy()), records.path),
            Records.picked(Picks([records], torch.nonzero(held).squeeze(1).numpy()), records.path))


def tokenize_validation(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> Sequence[Example] | None:
    """The validation examples (`data.validation`, read like `train`, or the held-out `validation_fraction`),
    tokenized the way training's are; None without validation data. With `data.token_cache` they are kept in a
    token store of their own, so a held-out fraction is not found again by reading the whole training source."""
    if not cfg.has_validation:
        return None
    use_chat_template(tokenizer, cfg.chat_template)
    check_splits(cfg, "validation")
    if cfg.token_cache and ((root := _store(cfg, tokenizer, "validation")) / META).exists():
        return TokenStore(root)
    if cfg.validation is not None:
        records = read_source(cfg.validation, columns=cfg.columns, split=cfg.validation_split,
                              field="data.validation", limit=None, encoding=cfg.encoding)
    else:
        records = split_validation(read_training_records(cfg), cfg)[1]
    if cfg.token_cache:
        return _store_validation(records, cfg, tokenizer)
    return _validation_examples(records, cfg, tokenizer)


def _validation_examples(records: Records, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> list[Example]:
    stream = ExampleStream(records, cfg, tokenizer, field="data.validation")
    examples = list(stream)
    _check_scored(stream, records, cfg)
    return examples


def _check_scored(stream: ExampleStream, records: Records, cfg: DataConfig) -> None:
    if not stream.kept:
        raise DataError(f"data.validation: {len(records)} records yield no tokens to score at max_length="
                        f"{cfg.max_length}")


def _store_validation(records: Records, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> TokenStore:
    """Streamed into its store like the training examples (a held-out fraction may be large), then memory-mapped."""
    stream = ExampleStream(records, cfg, tokenizer, field="data.validation")
    root = write_store(_store(cfg, tokenizer, "validation"), stream, {"validation": cfg.validation or "held out"},
                       segmented=stream.segmented, accept=lambda: _check_scored(stream, records, cfg))
    return TokenStore(root)


class BatchPlan:
    """Which examples each optimizer step, process and accumulation step sees."""

    def __init__(self, n_examples: int, batch_size: int, micro_batch_size: int, world_size: int, seed: int):
        if batch_size % (micro_batch_size * world_size):
            raise DataError(
                f"training.batch_size ({batch_size}) must be a multiple of micro_batch_size × processes "
                f"({micro_batch_size} × {world_size})"
            )
        if n_examples < batch_size:
            raise DataError(f"data.train: {n_examples} sequence(s) for a batch of training.batch_size {batch_size}: "
                            "every batch would hold the same sequences several times. Add data, lower "
                            "data.max_length (text is packed into blocks of max_length tokens) or lower "
                            "training.batch_size")
        self.n, self.batch_size, self.micro, self.world, self.seed = n_examples, batch_size, micro_batch_size, \
            world_size, seed
        self.accumulation = batch_size // (micro_batch_size * world_size)

    @lru_cache(maxsize=4)  # noqa: B019 — a plan lives for one run; the cache holds a few permutations
    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def step_indices(self, step: int) -> list[int]:
        """The global batch of optimizer step `step` (0-based), as example indices."""
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [self._order(p // self.n)[p % self.n] for p in positions]

    def visited(self, max_steps: int) -> list[int]:
        """Every example steps 0 … max_steps − 1 see, once each, in index order."""
        return sorted({i for step in range(max_steps) for i in self.step_indices(step)})

    def micro_indices(self, step: int, rank: int) -> list[list[int]]:
        """The micro-batches process `rank` runs at `step`, one list per accumulation step."""
        batch = self.step_indices(step)
        return [batch[(a * self.world + rank) * self.micro:(a * self.world + rank + 1) * self.micro]
                for a in range(self.accumulation)]
