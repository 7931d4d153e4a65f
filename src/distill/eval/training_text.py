"""The words of training records, in every format training reads, for the contamination check.

Training reads three formats (data/formatting.py): `text` (the recipe's `data.text_field`), `prompt` + `completion`,
and chat `messages`. The contamination check must see the same words the student was trained on, whatever the
format: reading only a `text` field would find nothing in chat or prompt/completion data and report an eval set
copied from the training completions as 0% contaminated. A record with no readable text adds nothing, and when no
record has any the check is reported as not computed (see `contamination.contamination_result`), never as 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, get_args, overload

from distill.data.dataset import split_validation
from distill.data.normalize import read_training_records, sharegpt_to_messages
from distill.data.sources import read_records
from distill.recipe import DataConfig, DataFormat

FORMATS: tuple[str, ...] = get_args(DataFormat)  # named once, in the recipe's data.format


def record_text(record: dict[str, Any], fmt: str = "auto", text_field: str = "text") -> str | None:
    """The text one training record shows the model, or None when it has none.

    `fmt` is the recipe's `data.format`; with `auto` each record is read as training would infer it (chat, then
    prompt + completion, then the text field). Prompt and completion, and the turns of a chat, are joined by a
    newline: the model read them as one sequence, so an n-gram may span them. A chat turn's content may be a string
    or a list of OpenAI-style parts, of which the `{"type": "text", "text": ...}` ones are read.
    """
    readers = {"messages": _messages_text, "prompt_completion": _prompt_completion_text,
               "text": lambda r: _text_field(r, text_field)}
    if fmt in readers:
        return readers[fmt](record)
    if "messages" in record:
        return _messages_text(record)
    if "prompt" in record or "completion" in record:
        return _prompt_completion_text(record)
    return _text_field(record, text_field)


def describe_format(fmt: str = "auto", text_field: str = "text") -> str:
    """What `record_text` looks for, in words (for the message when it found nothing)."""
    field = f"a string field {text_field!r}"
    return {"text": field, "prompt_completion": "string 'prompt' / 'completion' fields",
            "messages": "'messages' whose turns have text content"}.get(
        fmt, f"{field}, 'prompt' / 'completion', or 'messages' with text content")


def _text_field(record: dict[str, Any], text_field: str) -> str | None:
    return _nonblank(record.get(text_field))


def _prompt_completion_text(record: dict[str, Any]) -> str | None:
    return _join(_nonblank(record.get(key)) for key in ("prompt", "completion"))


def _messages_text(record: dict[str, Any]) -> str | None:
    messages = record.get("messages")
    if not isinstance(messages, list):
        return None
    return _join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))


def _content_text(content: Any) -> str | None:
    if isinstance(content, list):
        return _join(_nonblank(part) if isinstance(part, str)
                     else _nonblank(part.get("text")) if isinstance(part, dict) and part.get("type", "text") == "text"
                     else None for part in content)
    return _nonblank(content)


def _nonblank(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _join(pieces: Any) -> str | None:
    found = [p for p in pieces if p]
    return "\n".join(found) if found else None


@dataclass(frozen=True)
class TrainingTexts(Sequence[str]):
    """The readable texts of a training set, with where they came from and how many records it had: a sequence of
    texts, so it goes wherever a list of training texts does, and the contamination check can say when the records
    held no text at all (or only some did) instead of reporting 0% overlap."""

    texts: list[str]
    source: str
    records: int  # records read, with or without text
    looked_for: str = "text"  # what record_text looked for, in words

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self.texts[index]

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)


def read_training_texts(source: str, *, fmt: str = "auto", text_field: str = "text", limit: int | None = None,
                        field: str = "--train-data", encoding: str = "utf-8") -> TrainingTexts:
    """Read `source` (any data source training reads) and keep the text of each record that has some. ShareGPT
    `conversations` become `messages` as training and the eval set read them (`data.normalize.sharegpt_to_messages`):
    left as they are, their `from`/`value` turns hold no text this reader knows, and the check would say "not
    computed" for a ShareGPT training file."""
    records = sharegpt_to_messages(read_records(source, field=field, limit=limit, encoding=encoding), field)
    texts = [text for record in records if (text := record_text(record, fmt, text_field)) is not None]
    return TrainingTexts(texts, source, len(records), describe_format(fmt, text_field))


def recipe_training_texts(data: DataConfig, field: str = "data.train") -> TrainingTexts:
    """The training text exactly as a recipe's data section reads it: its source or mixture, renamed columns,
    ShareGPT turns as messages, its format and text field, and only the first `max_examples` records — less the
    records `data.validation_fraction` held out, which were never trained on. They are found by training's own
    `split_validation` (a permutation seeded by `data.mixture_seed`), so evaluating on exactly those held-out
    records reports them as clean, not as contaminated."""
    records = split_validation(read_training_records(data, field=field), data)[0]
    texts = [text for record in records if (text := record_text(record, data.format, data.text_field)) is not None]
    return TrainingTexts(texts, data.describe(), len(records), describe_format(data.format, data.text_field))
