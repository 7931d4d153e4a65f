"""Turn records into token ids and labels.

Labels are aligned with `input_ids` (the Hugging Face convention): `labels[t]` is the token at position t when the
loss should predict it, or `IGNORE_INDEX` when it should not. The shift (position t−1 predicts token t) happens once,
in the objective. Where there is a prompt, only the completion — or, for chat, only the assistant turns — carries
labels.

Every problem with a record names where it came from (`where`: "FILE, line N"), so a person can open the file there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from transformers import PreTrainedTokenizerBase

from distill.data.sources import Record, location
from distill.errors import DataError
from distill.recipe import RecordFormat

IGNORE_INDEX = -100
FORMATS: tuple[str, ...] = get_args(RecordFormat)  # named once, in the recipe's data.format


@dataclass
class Example:
    """One training sequence. `position_ids`: set when packed documents must not attend to each other (they restart
    at 0 at each document, which transformers turns into a block-diagonal causal mask); None = 0, 1, 2, …"""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None

    @property
    def n_targets(self) -> int:
        """Tokens the loss predicts: labelled positions after the first (position 0 has no predecessor)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def use_chat_template(tokenizer: PreTrainedTokenizerBase, template: str | None,
                      field: str = "data.chat_template") -> None:
    """Render chat with `template` (`data.chat_template`: Jinja, or the path of a file holding it) instead of the
    tokenizer's own. The tokenizer keeps it, so the student is saved with the template it was trained with, and the
    tokenizer's identity (token store, teacher cache) changes with it."""
    if template is None:
        return
    if "{{" not in template and "{%" not in template:
        path = Path(template)
        if not path.is_file():
            raise DataError(f"{field}: {template!r} is neither a Jinja template (no {{{{ or {{%) nor a "
                            "file holding one")
        template = path.read_text(encoding="utf-8")
    tokenizer.chat_template = template


def detect_format(record: Record, declared: str, text_field: str = "text", field: str = "data.format") -> str:
    """The record format: the declared one (checked against the first record) or, for `auto`, inferred from it."""
    keys = set(record)
    required = {"text": {text_field}, "prompt_completion": {"prompt", "completion"}, "messages": {"messages"}}
    inferred = (
        "messages" if "messages" in keys
        else "prompt_completion" if {"prompt", "completion"} <= keys
        else "text" if text_field in keys
        else None
    )
    if declared == "auto":
        if inferred is None:
            raise DataError(f"{field}: cannot tell the format from a record with keys {sorted(keys)}; expected "
                            "'text', 'prompt' + 'completion', or 'messages' (or set data.format and data.text_field)")
        return inferred
    if not required[declared] <= keys:
        hint = f"; they look like `{inferred}`" if inferred else ""
        named = "data.text_field" if declared == "text" else field
        raise DataError(f"{named}: format {declared!r} needs fields {sorted(required[declared])}, but the first "
                        f"record has {sorted(keys)}{hint}")
    return declared


def encode_text(records: Sequence[Record], tokenizer: PreTrainedTokenizerBase, text_field: str, start: int = 0,
                stop: int | None = None) -> list[list[int]]:
    """Token ids of each document of `records[start:stop]`, ending with EOS so packed documents stay separated
    (errors name the record's place in the whole of `records`)."""
    texts = []
    for i in range(start, len(records) if stop is None else stop):
        record = records[i]
        value = record.get(text_field)
        if not isinstance(value, str):
            raise DataError(f"data.text_field: {location(records, i)}: no string field {text_field!r} "
                            f"(keys: {sorted(record)})")
        texts.append(value)
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    return [[*ids, tokenizer.eos_token_id] for ids in encoded]


def encode_prompt_completion(record: Record, tokenizer: PreTrainedTokenizerBase, where: str,
                             field: str = "data.train") -> Example:
    """`where` names the record in errors ("FILE, line N", see `Records.where`), `field` the setting or option that
    named its source (`distill eval` passes its own)."""
    prompt, completion = record.get("prompt"), record.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DataError(f"{field}: {where}: needs string 'prompt' and 'completion' fields "
                        f"(keys: {sorted(record)})")
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Example(prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids)


def encode_messages(record: Record, tokenizer: PreTrainedTokenizerBase, where: str,
                    field: str = "data.train") -> Example:
    """Render a chat with the tokenizer's template; label the tokens of assistant turns only.

    Assistant spans are found by rendering growing prefixes of the conversation: the text of turn i runs from the
    end of `render(messages[:i], add_generation_prompt=True)` to the end of `render(messages[:i+1])`. Tokens whose
    first character falls in such a span are labelled. This works for any template that renders prefixes
    consistently, which is checked. `where` names the record in errors ("FILE, line N"), `field` its source's setting.
    """
    if tokenizer.chat_template is None:
        raise DataError("data.format: chat `messages` need a tokenizer with a chat template, and this one has none; "
                        "use prompt/completion records or a tokenizer that has one")
    messages = record.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in messages):
        raise DataError(f"{field}: {where}: 'messages' must be a list of {{role, content}} objects")
    messages = _plain_messages(messages, where, field)

    def render(turns: list[dict], generation_prompt: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as exc:  # the template's own checks (role order, roles it knows) or a jinja error
            raise DataError(f"{field}: {where}: the chat template cannot render this conversation "
                            f"({type(exc).__name__}: {exc}); fix the record or use a tokenizer whose chat "
                            "template accepts it") from exc

    full = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start_text, end_text = render(messages[:i], generation_prompt=True), render(messages[: i + 1])
        if not (full.startswith(start_text) and full.startswith(end_text)):
            raise DataError(f"{field}: {where}: the chat template does not render conversation prefixes "
                            "consistently, so assistant turns cannot be located")
        spans.append((len(start_text), len(end_text)))
    if not spans:
        raise DataError(f"{field}: {where}: no assistant turn to learn from")
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    labels = [tok if any(s <= begin < e for s, e in spans) else IGNORE_INDEX
              for tok, (begin, _end) in zip(ids, offsets, strict=True)]
    return Example(list(ids), labels)


def _plain_messages(messages: list[dict], where: str, field: str) -> list[dict]:
    """The conversation with every `content` a string, the record left untouched.

    OpenAI-style content — a list of `{"type": "text", "text": ...}` parts — is joined into one string (with no
    separator, as templates that accept parts render them), because most chat templates only concatenate strings.
    Anything else (a number, null, an image part) cannot be trained on as text and is refused with the turn named.
    """
    plain = []
    for j, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, list):
            content = "".join(_text_of(part, f"messages[{j}].content[{k}]", where, field)
                              for k, part in enumerate(content))
        elif not isinstance(content, str):
            shown = "null" if content is None else f"{type(content).__name__} ({content!r:.40})"
            raise DataError(f"{field}: {where}: messages[{j}].content is {shown}; it must be a string or a list of "
                            '{"type": "text", "text": ...} parts')
        plain.append({**message, "content": content})
    return plain


def _text_of(part: object, name: str, where: str, field: str) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    kind = part.get("type") if isinstance(part, dict) else None
    if isinstance(kind, str) and kind != "text":
        raise DataError(f"{field}: {where}: {name} is a {kind!r} part; only text parts can be trained on, so "
                        "drop that part or the record")
    raise DataError(f"{field}: {where}: {name} is not a {{type, text}} part with a string `text`")
