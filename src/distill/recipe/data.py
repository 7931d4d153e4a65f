"""The `data` section: where training records come from, their format, and how they are tokenized."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator

from distill.recipe.base import Section

# the record formats training reads (data/formatting.py); `auto` picks one of them from the first record
RecordFormat = Literal["text", "prompt_completion", "messages"]
DataFormat = Literal["auto", RecordFormat]


class DataConfig(Section):
    train: str = Field(
        description="Training data: a .jsonl or .parquet file, a folder of .txt files, a `datasets` folder "
        "(save_to_disk), or `builtin:NAME`.",
    )
    format: DataFormat = Field(
        default="auto",
        description="`text` (language modelling), `prompt_completion` (loss on the completion only), or `messages` "
        "(chat, rendered with the tokenizer's chat template; loss on assistant turns only). `auto` picks from the "
        "fields of the first record.",
    )
    text_field: str = Field(default="text", description="Field holding the text for `format: text`.")
    max_length: int = Field(default=512, ge=8, description="Tokens per sequence (packed block length for text).")
    packing: bool = Field(
        default=True,
        description="For `text`: concatenate documents (separated by EOS) and cut into blocks of `max_length`.",
    )
    reset_attention: bool = Field(
        default=False,
        description="For packed `text`: each document attends only to itself (position ids restart at every "
        "document; transformers builds the block-diagonal mask), and a document's first token is not a target. "
        "Off: a block is one sequence, documents see the ones before them.",
    )
    token_cache: bool = Field(
        default=True,
        description="Keep the tokenized data on disk ($DISTILL_CACHE/tokens, keyed by the tokenizer, this section and "
        "the source's bytes) and memory-map it: tokenized once, shared by every process and later run. false: "
        "tokenize in memory every run.",
    )
    max_examples: int | None = Field(default=None, ge=1, description="Use only the first N records (for quick runs).")
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of .jsonl files and .txt folders (any Python codec: `latin-1`, `cp1252`, "
        "`utf-16`, ...). Decoding is strict: a file that does not decode is an error naming its line, never "
        "replacement characters.",
    )

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; use a Python codec name such as utf-8, latin-1 or "
                             "cp1252") from None
        try:
            "\n".encode(value)  # not b"".decode: the empty input skips the check
        except LookupError:  # a bytes-to-bytes codec (base64, zlib, hex)
            raise ValueError(f"{value!r} is not a text encoding; use one such as utf-8, latin-1 or cp1252") from None
        return value
