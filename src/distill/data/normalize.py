"""Records in the shapes distill reads: the source's columns renamed (`data.columns`), ShareGPT conversations
turned into `messages`, and several sources mixed by weight (`data.mixture`).

Column names differ between data sets (`question`/`answer`, `instruction`/`output`, `conversations`), and so do chat
shapes: ShareGPT stores `{"from": "human", "value": ...}` turns where the chat templates want
`{"role": "user", "content": ...}`. Renaming and converting here, before the format is detected, lets every later
step — format detection, tokenization, the contamination check — see one shape.
"""

from __future__ import annotations

import logging
from array import array
from typing import Any, Literal

import torch
from pydantic import BaseModel

from distill.data.formatting import detect_format
from distill.data.records import Picks
from distill.data.sources import Record, Records, read_records, refuse_split
from distill.errors import DataError
from distill.recipe import DataConfig
from distill.recipe.data import DataSource

log = logging.getLogger(__name__)
# a mixture cut short by its first exhausted source is worth a warning when it leaves this share of all records unused
UNUSED_WORTH_A_WARNING = 0.1

# ShareGPT speakers and the chat roles they become
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
                  "function_call": "assistant", "observation": "tool"}


def rename_columns(records: Records, columns: dict[str, str], field: str) -> Records:
    """Each record with `columns` {ours: theirs} renamed, as it is read; a column missing from a record is an error
    naming it."""
    if not columns:
        return records

    def renamed(record: Record, i: int) -> Record:
        missing = [theirs for theirs in columns.values() if theirs not in record]
        if missing:
            raise DataError(f"{field}: {records.where(i)}: no column {missing[0]!r} to rename (data.columns maps "
                            f"{columns}); the record has {sorted(record)}")
        out = {k: v for k, v in record.items() if k not in columns.values()}
        out.update({ours: record[theirs] for ours, theirs in columns.items()})
        return out

    return records.mapped(renamed)


def sharegpt_to_messages(records: Records, field: str) -> Records:
    """Records with ShareGPT `conversations` (and no `messages`) get `messages` in the chat templates' shape, as
    they are read; so do `messages` of ShareGPT turns (`data.columns` renamed `conversations` to `messages`). The
    first record decides."""
    if not records:
        return records
    first = records[0]
    if "conversations" in first and "messages" not in first:
        key = "conversations"
    elif _sharegpt_turns(first.get("messages")):
        key = "messages"
    else:
        return records

    def converted(record: Record, i: int) -> Record:
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
        return {**{k: v for k, v in record.items() if k != key}, "messages": messages}

    return records.mapped(converted)


def _sharegpt_turns(turns: Any) -> bool:
    return (isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]
            and "value" in turns[0] and "role" not in turns[0])


def read_source(path: str, *, columns: dict[str, str], split: str, field: str, limit: int | None,
                encoding: str) -> Records:
    """One source's records in the shapes distill reads."""
    records = read_records(path, field=field, limit=limit, encoding=encoding, split=split)
    return sharegpt_to_messages(rename_columns(records, columns, field), field)


def check_splits(data: DataConfig, part: Literal["train", "validation"] = "train") -> None:
    """Refuse a split the data section asks of a source that has none (`sources.refuse_split`) — of the training
    sources (`part` "train": `data.split`, each `data.mixture[i].split`) or of `data.validation`
    (`data.validation_split`) — before anything is read or found in the token cache.

    Only a split other than the field's default counts as asked for: the default is what a source without splits
    is anyway (all of it), and recipes written next to runs spell every default out."""
    if part == "validation":
        if data.validation is not None and data.validation_split != _default(DataConfig, "validation_split"):
            refuse_split(data.validation, "data.validation", data.validation_split, "data.validation_split")
        return
    for i, source in enumerate(data.sources()):
        if source.split != _default(DataSource, "split"):
            field = "data.train" if data.mixture is None else f"data.mixture[{i}]"
            refuse_split(source.path, field, source.split, "data.split" if data.mixture is None else f"{field}.split")


def _default(section: type[BaseModel], name: str) -> Any:
    return section.model_fields[name].default


def mix(parts: list[Records], weights: list[float], seed: int, names: list[str] | None = None,
        wanted: int | None = None) -> Records:
    """Interleave `parts`: each next record comes from part i with probability weights[i] / Σ weights (a seeded
    draw), each part taken in its own seeded random order, until the first part runs out — so no record repeats
    and the shares follow the weights within sampling error. A mixture cut short that way says so
    (`_warn_if_cut_short`; `names` name the parts in it, `wanted`: the records asked for, if any)."""
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(part), generator=generator).numpy() for part in parts]
    probabilities = torch.tensor(weights, dtype=torch.float64)
    taken = [0] * len(parts)
    part_of, indices = array("b" if len(parts) < 128 else "q"), array("q")  # integer arrays, not a tuple a record
    budget = sum(len(p) for p in parts)
    draws = torch.multinomial(probabilities, budget, replacement=True, generator=generator).numpy()
    for source in draws.tolist():
        if taken[source] == len(parts[source]):
            _warn_if_cut_short(parts, weights, taken, source, names or [str(p.path) for p in parts], wanted)
            break
        part_of.append(source)
        indices.append(int(orders[source][taken[source]]))
        taken[source] += 1
    return Records.picked(Picks(parts, indices, part_of), parts[0].path)


def _warn_if_cut_short(parts: list[Records], weights: list[float], taken: list[int], out: int, names: list[str],
                       wanted: int | None) -> None:
    """One line when the mixture stopped because part `out` ran out, leaving the mixture short of the `wanted`
    records or a tenth or more of all the parts' records unused — a tiny source with a large weight otherwise
    shrinks the training data without a word. The way out is said with it: a lower weight for that source (drawn
    less often, the mixture runs longer) or its records repeated (listed k times, each with a k-th of its weight)."""
    held, total = sum(taken), sum(len(p) for p in parts)
    unused = total - held
    if (wanted is not None and held >= wanted) or (wanted is None and unused < UNUSED_WORTH_A_WARNING * total):
        return
    short = f", short of the {wanted:,} asked for (data.max_examples)" if wanted is not None else ""
    log.warning(f"data.mixture: {names[out]} (weight {weights[out]:g}) ran out after its {len(parts[out]):,} "
                f"records, so the mixture holds {held:,} records{short} and leaves {unused:,} records of the other "
                f"sources unused (no record repeats); to use more of them, lower that source's weight, or repeat its "
                f"records by listing it k times, each with weight {weights[out]:g}/k")


def read_training_records(data: DataConfig, field: str = "data.train") -> Records:
    """The records a recipe's data section (`DataConfig`) trains on: `train` (renamed, converted), or its `mixture`
    mixed by `mixture_seed`; then the first `max_examples`."""
    sources = data.sources()
    check_splits(data)
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
    records = mix(parts, [s.weight for s in sources], data.mixture_seed,
                  [f"data.mixture[{i}] ({s.path})" for i, s in enumerate(sources)], data.max_examples)
    if not records:
        raise DataError("data.mixture: the mixture holds no records")
    return records.head(data.max_examples) if data.max_examples else records
