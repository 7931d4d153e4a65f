"""Records turned into training examples block by block, so a corpus is never held as token lists all at once.

Tokenized text held as Python lists costs about 36 bytes per token (a pointer and an int object each) — nine times
the text it came from, and, with packing, twice over while the documents are concatenated. The first build of a
token store used to hold all of it before writing a byte. `ExampleStream` tokenizes `BLOCK_RECORDS` records at a
time and packs incrementally (`Packer`: a carry of at most one block plus one record block's documents), so the store
(data/token_store.py) is written as the examples come, and the peak is the records' text plus one block of tokens
(bench/token_store.py measures it).

`pack` — the whole corpus at once — is the same packer run over one list, the slow twin the streamed path is tested
against (tests/test_packing.py: same examples, any block size).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from transformers import PreTrainedTokenizerBase

from distill.data.formatting import (
    IGNORE_INDEX,
    Example,
    detect_format,
    encode_messages,
    encode_prompt_completion,
    encode_text,
)
from distill.data.sources import Records
from distill.recipe import DataConfig

BLOCK_RECORDS = 1024  # records tokenized at once: large enough for the fast tokenizer's batching, small in memory


class Packer:
    """Concatenates documents (each ending with EOS) and cuts blocks of `block` tokens as they fill.

    The remainder shorter than a block is dropped, unless the data is shorter than a single block, in which case it
    becomes one (shorter) example. `reset_attention`: each block carries position ids that restart at every document
    start, so each document attends only to itself, and a document's first token is not a target (it would be
    predicted from the previous document, which it no longer sees)."""

    def __init__(self, block: int, reset_attention: bool = False):
        self.block, self.reset = block, reset_attention
        self.tokens: list[int] = []
        self.positions: list[int] = []  # each token's position in its document (reset_attention only)
        self.emitted = 0

    def add(self, documents: Iterable[list[int]]) -> Iterator[Example]:
        for doc in documents:
            self.tokens.extend(doc)
            if self.reset:
                self.positions.extend(range(len(doc)))
        full = len(self.tokens) // self.block
        for i in range(full):
            yield self._example(i * self.block, (i + 1) * self.block)
        cut = full * self.block
        del self.tokens[:cut]
        del self.positions[:cut if self.reset else 0]

    def finish(self) -> Iterator[Example]:
        if self.emitted == 0 and len(self.tokens) > 1:
            yield self._example(0, len(self.tokens))

    def _example(self, a: int, b: int) -> Example:
        self.emitted += 1
        stream = self.tokens[a:b]
        if not self.reset:
            return Example(stream, list(stream))
        # a block that starts mid-document starts a segment of its own: positions restart at the block's start
        local = [p if p < j else j for j, p in enumerate(self.positions[a:b])]
        labels = [tok if (p > 0 or j == 0) else IGNORE_INDEX for j, (tok, p) in enumerate(zip(stream, local,
                                                                                              strict=True))]
        return Example(stream, labels, local)


def pack(documents: list[list[int]], block: int, reset_attention: bool = False) -> list[Example]:
    """Every document packed at once (see `Packer`)."""
    packer = Packer(block, reset_attention)
    return [*packer.add(documents), *packer.finish()]


class ExampleStream(Iterable[Example]):
    """The examples of `records` with something to learn, made `block` records at a time: packed text, or one per
    record (truncated to `max_length`). After iterating, `kept` and `dropped` (left with no target after
    truncation) are set; `format` is known at once (from the first record)."""

    def __init__(self, records: Records, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase,
                 field: str = "data.format", block: int = BLOCK_RECORDS):
        self.records, self.cfg, self.tokenizer, self.block = records, cfg, tokenizer, block
        self.format = detect_format(records[0], cfg.format, cfg.text_field, field=field)
        self.kept = self.dropped = 0

    @property
    def packed(self) -> bool:
        return self.cfg.packing and self.format == "text"

    @property
    def segmented(self) -> bool:
        """Whether the examples carry position ids (packed with attention reset): what a store writes up front."""
        return self.packed and self.cfg.reset_attention

    def __iter__(self) -> Iterator[Example]:
        self.kept = self.dropped = 0
        for example in self._all():
            if example.n_targets > 0:
                self.kept += 1
                yield example
            else:
                self.dropped += 1

    def _all(self) -> Iterator[Example]:
        cfg, n = self.cfg, len(self.records)
        packer = Packer(cfg.max_length, cfg.reset_attention) if self.packed else None
        for start in range(0, n, self.block):
            stop = min(start + self.block, n)
            if self.format == "text":
                documents = encode_text(self.records, self.tokenizer, cfg.text_field, start, stop)
                if packer is not None:
                    yield from packer.add(documents)
                else:
                    yield from (_truncate(Example(d, list(d)), cfg.max_length) for d in documents)
            else:
                encode = encode_messages if self.format == "messages" else encode_prompt_completion
                yield from (_truncate(encode(self.records[i], self.tokenizer, self.records.where(i)), cfg.max_length)
                            for i in range(start, stop))
        if packer is not None:
            yield from packer.finish()


def _truncate(example: Example, max_length: int) -> Example:
    return Example(example.input_ids[:max_length], example.labels[:max_length])
