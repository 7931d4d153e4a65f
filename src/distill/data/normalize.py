"""Records in the shapes distill reads: the source's columns renamed (`data.columns`), ShareGPT conversations
turned into `messages`, and several sources mixed by weight (`data.mixture`).

Column names differ between data sets (`question`/`answer`, `instruction`/`output`, `conversations`), and so do chat
shapes: ShareGPT stores `{"from": "human", "value": ...}` turns where the chat templates want
`{"role": "user", "content": ...}`. Renaming and converting here, before the format is detected, lets every later
step — format detection, tokenization, the contamination check — see one shape.
"""

from __future__ import annotations

from typing import Any

import torch

from distill.data.formatting import detect_format
from distill.data.sources import Records, read_records
from distill.errors import DataError
from distill.recipe import DataConfig

# ShareGPT speakers and the chat roles they become
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
                  "function_call": "assistant", "observation": "tool"}


def rename_columns(records: Records, columns: dict[str, str], field: str) -> Records:
    """Each record with `columns` {ours: theirs} renamed; a column missing from a record is an error naming it."""
    if not columns:
        return records
    out = []
    for i, record in enumerate(records):
        missing = [theirs for theirs in columns.values() if theirs not in record]
        if missing:
            raise DataError(f"{field}: {records.where(i)}: no column {missing[0]!r} to rename (data.columns maps "
                            f"{columns}); the record has {sorted(record)}")
        renamed = {k: v for k, v in record.items() if k not in columns.values()}
        renamed.update({ours: record[theirs] for ours, theirs in columns.items()})
        out.append(renamed)
    return records.replaced(out)


def sharegpt_to_messages(records: Records, field: str) -> Records:
    """Records with ShareGPT `conversations` (and no `messages`) get `messages` in the chat templates' shape; so do
    `messages` of ShareGPT turns (`data.columns` renamed `conversations` to `messages`)."""
    if not records:
        return records
    first = records[0]
    if "conversations" in first and "messages" not in first:
        key = "conversations"
    elif _sharegpt_turns(first.get("messages")):
        key = "messages"
    else:
        return records
    out = []
    for i, record in enumerate(records):
        turns = record.get(key)
        if not isinstance(turns, list):
            raise DataError(f"{field}: {records.where(i)}: {key!r} must be a list of ShareGPT {{from, value}} turns")
        messages = []
        for j, turn in enumerate(turns):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise DataError(f"{field}: {records.where(i)}: {key}[{j}] is not a {{from, value}} turn")
            role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                raise DataError(f"{field}: {records.where(i)}: {key}[{j}] is from {turn['from']!r}; known "
                                f"speakers: {', '.join(sorted(SHAREGPT_ROLES))}")
            messages.append({"role": role, "content": turn["value"]})
        out.append({**{k: v for k, v in record.items() if k != key}, "messages": messages})
    return records.replaced(out)


def _sharegpt_turns(turns: Any) -> bool:
    return (isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]
            and "value" in turns[0] and "role" not in turns[0])


def read_source(path: str, *, columns: dict[str, str], split: str, field: str, limit: int | None,
                encoding: str) -> Records:
    """One source's records in the shapes distill reads."""
    records = read_records(path, field=field, limit=limit, encoding=encoding, split=split)
    return sharegpt_to_messages(rename_columns(records, columns, field), field)


def mix(parts: list[Records], weights: list[float], seed: int) -> Records:
    """Interleave `parts`: each next record comes from part i with probability weights[i] / Σ weights (a seeded
    draw), each part taken in its own seeded random order, until the first part runs out — so no record repeats
    and the shares follow the weights within sampling error."""
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(part), generator=generator).tolist() for part in parts]
    probabilities = torch.tensor(weights, dtype=torch.float64)
    taken = [0] * len(parts)
    picks: list[tuple[Records, int]] = []
    budget = sum(len(p) for p in parts)
    draws = torch.multinomial(probabilities, budget, replacement=True, generator=generator).tolist()
    for source in draws:
        if taken[source] == len(parts[source]):
            break
        picks.append((parts[source], orders[source][taken[source]]))
        taken[source] += 1
    return Records.picked(picks, parts[0].path)


def read_training_records(data: DataConfig, field: str = "data.train") -> Records:
    """The records a recipe's data section (`DataConfig`) trains on: `train` (renamed, converted), or its `mixture`
    mixed by `mixture_seed`; then the first `max_examples`."""
    sources = data.sources()
    parts = [read_source(s.path, columns=s.columns, split=s.split, limit=None if data.mixture else data.max_examples,
                         encoding=data.encoding, field=field if data.mixture is None else f"data.mixture[{i}]")
             for i, s in enumerate(sources)]
    if data.mixture is None:
        return parts[0]
    formats = [detect_format(part[0], data.format, data.text_field, field=f"data.mixture[{i}]")
               for i, part in enumerate(parts)]
    if len(set(formats)) > 1:
        raise DataError("data.mixture: the sources hold different formats ("
                        + ", ".join(f"{s.path}: {f}" for s, f in zip(sources, formats, strict=True))
                        + "); mix sources of one format (rename columns with a source's `columns` to match)")
    records = mix(parts, [s.weight for s in sources], data.mixture_seed)
    if not records:
        raise DataError("data.mixture: the mixture holds no records")
    return records.head(data.max_examples) if data.max_examples else records
