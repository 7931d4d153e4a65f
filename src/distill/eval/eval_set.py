"""The documents of an evaluation set, and which of their tokens are scored.

A student is measured in the format it was trained on. Training reads three record formats (data/formatting.py) and
puts its loss on different tokens of each: every token of a `text` record, the completion of a `prompt` +
`completion` record, the assistant turns of a chat. Chat and prompt/completion eval records are encoded by the very
same functions as training's (`encode_messages`, `encode_prompt_completion`), and only the tokens training would have
labelled are scored: a chat student's held-out NLL is then its NLL on assistant answers (rendered with the chat
template), not on the user's questions or the template's markup, which it was never trained to predict.

`text` records are not: they are tokenized here, like training's `encode_text` but *without* the EOS token it appends
(there, to keep packed documents apart), and scored on every token after the first. Scoring a text as it stands,
without predicting an end-of-text token it never contained, is the usual held-out-NLL (perplexity) convention, and
the one this set followed before other formats existed. A completion's end-of-text token is scored, on the other hand:
there training teaches the student where an answer stops.

The words of each record — what the contamination check compares with the training data — come from
`training_text.record_text`, the extraction the check applies to the training records, so both sides are read
alike whatever their format.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distill.data.formatting import Example, detect_format, encode_messages, encode_prompt_completion
from distill.data.normalize import sharegpt_to_messages
from distill.data.sources import location, read_records
from distill.errors import DataError
from distill.eval.training_text import FORMATS, record_text

SCORED = {"text": "every token after the first", "prompt_completion": "completion tokens (and the end-of-text token)",
          "messages": "assistant-turn tokens, rendered with the chat template"}


@dataclass
class EvalSet:
    """Documents of one evaluation set, in one record format, with the fields to slice by."""

    name: str
    source: str
    description: str
    records: list[dict[str, Any]]
    text_field: str = "text"
    slice_fields: list[str] = field(default_factory=list)
    format: str = "text"  # text | prompt_completion | messages: which tokens are scored (SCORED)
    wheres: list[str] = field(default_factory=list)  # each record's "FILE, line N", for errors

    def where(self, index: int) -> str:
        return self.wheres[index] if index < len(self.wheres) else f"record {index + 1}"

    @property
    def texts(self) -> list[str]:
        """The words of each record, as the contamination check reads training records."""
        return [record_text(r, self.format, self.text_field) or "" for r in self.records]

    def sha256(self) -> str:
        """Of the texts for `text` records (as before formats existed); of the scored fields otherwise, so a
        change of role or of the prompt/completion boundary changes it too."""
        digest = hashlib.sha256()
        for record in self.records:
            if self.format == "text":
                payload = record[self.text_field]
            else:
                keys = ("messages",) if self.format == "messages" else ("prompt", "completion")
                payload = json.dumps({k: record[k] for k in keys}, sort_keys=True, ensure_ascii=False)
            digest.update(payload.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def encode(self, tokenizer: Any, max_length: int) -> list[Example]:
        """Token ids and labels per document, cut to `max_length`; a label of IGNORE_INDEX (data/formatting.py) is
        not scored. A document left with nothing to score (its answer starts past `max_length`) is refused by name."""
        where = f"eval set {self.name}"
        if self.format == "messages" and tokenizer.chat_template is None:
            raise DataError(f"{where}: chat `messages` are rendered with a chat template, and the tokenizer has none; "
                            "pass --chat-template (Jinja or a file), or evaluate prompt/completion records")
        docs = []
        for i, record in enumerate(self.records):
            if self.format == "text":
                ids = tokenizer(record[self.text_field], add_special_tokens=True)["input_ids"]
                example = Example(list(ids), list(ids))
            else:
                encode = encode_messages if self.format == "messages" else encode_prompt_completion
                example = encode(record, tokenizer, self.where(i), field=where)
            example = Example(example.input_ids[:max_length], example.labels[:max_length])
            if example.n_targets == 0:
                raise DataError(f"{where}: {self.where(i)} has no token to score within the first "
                                f"{max_length} tokens ({SCORED[self.format]}); raise --max-length or drop the record")
            docs.append(example)
        return docs


def load_eval_set(source: str, *, name: str, description: str = "", text_field: str = "text",
                  slice_fields: Sequence[str] = (), max_docs: int | None = None, seed: int = 0,
                  fmt: str = "text") -> EvalSet:
    """Read an eval set in record format `fmt` (`auto`: told from the first record, as training does); with
    `max_docs`, take a deterministic sample spread evenly over the first slice field's values (so every slice
    keeps enough documents for an interval)."""
    where = f"eval set {name}"
    if fmt not in FORMATS:
        raise DataError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    if max_docs is not None and max_docs < 1:
        raise DataError(f"{where}: max_docs={max_docs} leaves nothing to evaluate; ask for at least 1 document, or "
                        "for all of them (no limit)")
    records = sharegpt_to_messages(read_records(source, field=where), where)  # ShareGPT turns read as training does
    if not records:
        raise DataError(f"{where}: {source} holds no records")
    fmt = detect_format(records[0], fmt, text_field, field=f"{where} (--format)")
    for i, record in enumerate(records):
        if fmt == "text" and (not isinstance(record.get(text_field), str) or not record[text_field].strip()):
            raise DataError(f"{where}: {location(records, i)} has no non-empty string field {text_field!r}")
        if fmt != "text" and detect_format(record, "auto", text_field, field=where) != fmt:
            raise DataError(f"{where}: {location(records, i)} is not a {fmt} record like the first one (keys: "
                            f"{sorted(record)}); an eval set holds one format")
        for key in slice_fields:
            if key not in record:
                raise DataError(f"{where}: {location(records, i)} has no field {key!r} to slice by "
                                f"(fields: {sorted(record)})")
    kept = range(len(records))
    if max_docs is not None and max_docs < len(records):
        kept = _spread_sample(records, max_docs, slice_fields[0] if slice_fields else None, seed)
    return EvalSet(name, source, description, [records[i] for i in kept], text_field, list(slice_fields), fmt,
                   [location(records, i) for i in kept])


def _spread_sample(records: Sequence[dict[str, Any]], n: int, key: str | None, seed: int) -> list[int]:
    """The indices of `n` records, spread over the values of `key`, in file order."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[record.get(key) if key else None].append(i)
    rng = random.Random(seed)
    queues = [rng.sample(idx, len(idx)) for _, idx in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return sorted(chosen)

