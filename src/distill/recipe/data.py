"""The `data` section: where training records come from, their format, and how they are tokenized."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.recipe.base import FieldProblem, Section

# the record formats training reads (data/formatting.py); `auto` picks one of them from the first record
RecordFormat = Literal["text", "prompt_completion", "messages"]
DataFormat = Literal["auto", RecordFormat]


SOURCE_HELP = ("a .jsonl, .json, .csv, .tsv or .parquet file (.jsonl/.json/.csv also compressed: .gz, .bz2, .xz, "
               ".zst), a glob or a folder of such shards, a folder of .txt files, a `datasets` folder (save_to_disk), "
               "or `builtin:NAME`")
NO_SPLITS_HELP = ("No other source has splits (a built-in names its split in the source, `builtin:NAME/SPLIT`): "
                  "a split other than the default asked of one is an error, never silently ignored.")
COLUMNS_HELP = ("Rename the source's columns to the names distill reads, {distill_name: source_column}, e.g. "
                "{prompt: question, completion: answer} or {messages: conversations}. ShareGPT turns "
                "({from: human|gpt|system, value}) under `conversations` become `messages` without it.")


class DataSource(Section):
    """One source of a `data.mixture`."""

    path: str = Field(description=f"The source: {SOURCE_HELP}.")
    weight: float = Field(default=1.0, gt=0.0, description="Its share of the mixture, relative to the others' weights.")
    split: str = Field(default="train", description=f"The split of a `datasets` folder saved from a DatasetDict. "
                       f"{NO_SPLITS_HELP}")
    columns: dict[str, str] = Field(default_factory=dict, description=COLUMNS_HELP)


class DataConfig(Section):
    train: str | None = Field(
        default=None,
        description=f"Training data: {SOURCE_HELP}. Or `mixture` instead.",
    )
    mixture: list[DataSource] | None = Field(
        default=None,
        description="Several sources mixed by weight instead of `train`: each next record comes from source i with "
        "probability weight_i / Σ weight (a draw seeded by `mixture_seed`), each source read in its own seeded "
        "order, until the first source runs out (none repeats); a warning names that source when it leaves the "
        "mixture short of `max_examples`, or a tenth or more of all the sources' records unused. Each source has "
        "its own `split` and `columns`.",
    )
    mixture_seed: int = Field(
        default=0, description="Seeds the mixture's draw and each source's order. Apart from the recipe's `seed`, so "
        "runs with other training seeds see the same data.",
    )
    split: str = Field(default="train", description="For `train`: the split of a `datasets` folder saved from a "
                       f"DatasetDict. {NO_SPLITS_HELP}")
    validation: str | None = Field(
        default=None,
        description="Validation data, read like `train` (its `columns` too; a `datasets` folder's "
        f"`validation_split`): {SOURCE_HELP}. Evaluated every `training.eval_every` steps.",
    )
    validation_split: str = Field(default="validation", description="The split `validation` reads from a `datasets` "
                                  f"folder saved from a DatasetDict. {NO_SPLITS_HELP}")
    validation_fraction: float = Field(
        default=0.0, ge=0.0, lt=0.5, description="Instead of `validation`: hold out this share of the training "
        "records (chosen with `mixture_seed`, before tokenization), never trained on.",
    )
    columns: dict[str, str] = Field(default_factory=dict, description=f"For `train`: {COLUMNS_HELP}")
    chat_template: str | None = Field(
        default=None,
        description="A chat template (Jinja) to render `messages` with instead of the tokenizer's, or the path of a "
        "file holding one. The student is saved with it.",
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

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.train is None) == (self.mixture is None):
            raise FieldProblem("train", "give either data.train (one source) or data.mixture (several), not "
                               + ("both" if self.train is not None else "neither"))
        if self.mixture is not None and not self.mixture:
            raise FieldProblem("mixture", "needs at least one source")
        if self.validation is not None and self.validation_fraction > 0:
            raise FieldProblem("validation_fraction", "give either data.validation (a source) or a held-out "
                               "data.validation_fraction, not both")
        if self.validation is None and self.validation_split != type(self).model_fields["validation_split"].default:
            raise FieldProblem("validation_split", f"{self.validation_split!r} is read from data.validation, which is "
                               "not set; name the source too (data.validation: the `datasets` folder, with this "
                               "split), or use data.validation_fraction to hold out training records")
        return self

    @property
    def has_validation(self) -> bool:
        return self.validation is not None or self.validation_fraction > 0

    def sources(self) -> list[DataSource]:
        """The sources read: `train` as a source of weight 1 with this section's split and columns, or `mixture`."""
        if self.mixture is not None:
            return list(self.mixture)
        return [DataSource(path=str(self.train), split=self.split, columns=self.columns)]

    def describe(self) -> str:
        """How messages name the data: the path, or the mixture's paths."""
        return self.train if self.train is not None else " + ".join(s.path for s in self.sources())

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
