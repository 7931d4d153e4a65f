"""Reading what an audit runs on: the teacher's watermarked texts (open mode), prompts (closed mode) and documents
(fingerprint), from the files distill already writes, so an auditor needs no conversion step.

A watermarked text is what the teacher *wrote*: the `completion` of a `distill generate` samples/train row, the last
assistant turn of a chat row, or the `text` of a plain JSONL record. Prompts are chat turns or a `prompt`/`text`
field, rendered as the teacher was served (`--format chat|plain`).
"""

from __future__ import annotations

from typing import Any, Literal

from distill.data.sources import location, read_records
from distill.errors import DataError

Formatting = Literal["chat", "plain"]


def teacher_text(record: dict[str, Any], text_field: str = "text") -> str | None:
    """The part of a record the teacher wrote (and watermarked), or None."""
    if isinstance(record.get("completion"), str):
        return record["completion"]
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant" and isinstance(messages[-1].get("content"), str):
        return messages[-1]["content"]
    value = record.get(text_field)
    return value if isinstance(value, str) else None


def read_texts(source: str, option: str, limit: int | None = None, text_field: str = "text") -> list[str]:
    """Every non-empty teacher text of a file; a record with none is a one-line DataError naming it."""
    records = read_records(source, option, limit)
    texts = []
    for i, record in enumerate(records):
        text = teacher_text(record, text_field)
        if text is None:
            raise DataError(f"{option}: {location(records, i)}: no `completion`, assistant turn or `{text_field}` "
                            "text")
        if text.strip():
            texts.append(text)
    if not texts:
        raise DataError(f"{option}: {source} holds no non-empty text")
    return texts


def read_prompts(source: str, option: str, limit: int | None = None) -> list[list[dict[str, str]] | str]:
    """Each prompt as chat turns (a `messages` row, its last assistant turn dropped) or plain text."""
    records = read_records(source, option, limit)
    prompts: list[list[dict[str, str]] | str] = []
    for i, record in enumerate(records):
        messages = record.get("messages")
        if isinstance(messages, list) and messages:
            turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages
                     if isinstance(m, dict) and "role" in m and "content" in m]
            turns = turns[:-1] if turns and turns[-1]["role"] == "assistant" else turns
            if turns:
                prompts.append(turns)
                continue
        value = record.get("prompt", record.get("text"))
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{option}: {location(records, i)}: no `messages`, `prompt` or `text`")
        prompts.append(value)
    return prompts


def prompt_ids(prompt: list[dict[str, str]] | str, tokenizer: Any, formatting: Formatting,
               system: str | None = None) -> list[int]:
    """The ids the model continues, as the teacher was served: chat (the tokenizer's template with its generation
    prompt, as /v1/chat/completions renders it) or plain text with the tokenizer's special tokens."""
    from distill.generation.prompts import Prompt
    from distill.generation.prompts import prompt_ids as rendered_ids

    if formatting == "plain":
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return rendered_ids(Prompt(0, {}, None, text), tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("--format chat: the suspect's tokenizer has no chat template; pass --format plain")
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and not any(t["role"] == "system" for t in turns):
        turns = [{"role": "system", "content": system}, *turns]
    return rendered_ids(Prompt(0, {}, turns, None), tokenizer)
