"""A source's records as a sequence that reads each one when asked, and remembers where each came from.

A corpus of several GB would fill the memory of the process that first tokenizes it if every record were a Python
dict at once (dicts and strings take 3–5× the file's bytes). So the large kinds of source are read lazily: a plain
JSONL file keeps only the offset, length and line number of each record (24 bytes; jsonl_lines.py) and parses a
line when asked; a `datasets` folder, and a Parquet, CSV or JSON file read through `datasets`, is an Arrow table
on disk, memory-mapped, turned into dicts a block at a time (`BlockRows`). What is done to the records — columns
renamed, ShareGPT turns converted, a mixture's picks (`Picks`), a held-out share — is a view over them, applied as
each record is read, so problems still name the file and line (`Records.where`); a rename or conversion problem
surfaces when its record is tokenized rather than when the file is opened.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

Record = dict[str, Any]
ARROW_BLOCK = 1024  # rows of an Arrow table turned into dicts at once


class Records(Sequence[Record]):
    """The records of one source, and where each came from: `where(i)` is "FILE, line N" for JSONL (the physical
    line), "FILE, row N" for Parquet, JSON, CSV and `datasets` folders, and the file itself for a folder of .txt
    files; records of several files (shards, a mixture) ask the part they came from.

    `rows` is any sequence of records (a list, or a lazy reader); `transform(record, index)`, if given, is applied
    to each record as it is read (`mapped`). Slicing gives a plain list (use `head` to keep the locations)."""

    def __init__(self, rows: Sequence[Record] | Iterator[Record], path: Path,
                 unit: Literal["line", "row", "file", "part"], numbers: Sequence[int] | None = None,
                 files: Sequence[Path] | None = None, origins: Sequence[tuple[Records, int]] | None = None,
                 transform: Callable[[Record, int], Record] | None = None):
        self._rows: Sequence[Record] = rows if hasattr(rows, "__getitem__") else list(rows)  # type: ignore[assignment]
        self.path, self.unit = path, unit
        self._numbers: Sequence[int] = numbers if numbers is not None else ()
        self._files = list(files or ())
        self._origins: Sequence[tuple[Records, int]] = origins if origins is not None else ()
        self._transform = transform

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        record = self._rows[index]
        return self._transform(record, index) if self._transform is not None else record

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def concat(cls, parts: Sequence[Records], path: Path) -> Records:
        """The records of `parts` one after the other (shards of one source)."""
        offsets = [0]
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        origins = _Origins(parts, offsets)
        return cls(_Picked(origins), path, "part", origins=origins)

    @classmethod
    def picked(cls, picks: Sequence[tuple[Records, int]], path: Path) -> Records:
        """The records `picks` names — (part, index) each, in that order (a mixture, a held-out share)."""
        return cls(_Picked(picks), path, "part", origins=picks)

    def where(self, index: int) -> str:
        """Where record `index` (0-based) came from, for messages a person reads."""
        if self.unit == "part":
            part, inner = self._origins[index]
            return part.where(inner)
        if self.unit == "file":
            return str(self._files[index])
        number = self._numbers[index] if self.unit == "line" else index + 1
        return f"{self.path}, {self.unit} {number}"

    def mapped(self, transform: Callable[[Record, int], Record]) -> Records:
        """These records with `transform(record, index)` applied to each as it is read (after any transform they
        already have), still knowing where each came from."""
        inner = self._transform
        chained = transform if inner is None else (lambda record, i: transform(inner(record, i), i))
        return Records(self._rows, self.path, self.unit, self._numbers, self._files, self._origins, chained)

    def replaced(self, rows: Sequence[Record]) -> Records:
        """`rows` (one per record, in order) in place of the records, still knowing where each came from."""
        if len(rows) != len(self):
            raise ValueError(f"{len(rows)} rows for {len(self)} records")
        return Records(rows, self.path, self.unit, self._numbers, self._files, self._origins)

    def head(self, n: int) -> Records:
        """The first `n` records, still knowing where they came from."""
        return Records.picked(_Prefix(self, min(n, len(self))), self.path)


class _Origins(Sequence[tuple[Records, int]]):
    """(part, index in it) of each record of concatenated parts, found by bisection instead of stored per record."""

    def __init__(self, parts: Sequence[Records], offsets: list[int]):
        self.parts, self.offsets = parts, offsets

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index):  # type: ignore[override]
        part = bisect.bisect_right(self.offsets, index) - 1
        return self.parts[part], index - self.offsets[part]


class _Prefix(Sequence[tuple[Records, int]]):
    """(records, i) for the first n records: `head` without a list of n pairs."""

    def __init__(self, records: Records, n: int):
        self.records, self.n = records, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):  # type: ignore[override]
        return self.records, index


class Picks(Sequence[tuple[Records, int]]):
    """(part, index in it) pairs kept as two integer arrays (16 bytes a record, not a tuple each): the records a
    mixture or a held-out share picks from `parts`. `part_of` None: every pick is from the one part."""

    def __init__(self, parts: Sequence[Records], indices: Sequence[int], part_of: Sequence[int] | None = None):
        self.parts, self.indices, self.part_of = parts, indices, part_of

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):  # type: ignore[override]
        part = self.parts[0 if self.part_of is None else int(self.part_of[index])]
        return part, int(self.indices[index])


class _Picked(Sequence[Record]):
    """The records a sequence of (part, index) names, read from their parts when asked for."""

    def __init__(self, picks: Sequence[tuple[Records, int]]):
        self.picks = picks

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, index):  # type: ignore[override]
        part, inner = self.picks[index]
        return part[inner]


class BlockRows(Sequence[Record]):
    """`n` rows of an Arrow table or a `datasets` table as dicts, read by `block(start, stop)` (a list of dicts).
    Read in order (tokenizing a source), they are converted `ARROW_BLOCK` at a time; a read out of order (a
    mixture's shuffled picks) converts that one row, so random access never pays for a whole block per record. One
    converted block is kept in the whole process (`_KEPT`), not one per source: a glob of many small shards would
    otherwise end up held whole as dicts, a block per shard."""

    def __init__(self, n: int, block: Callable[[int, int], list[Record]]):
        self.n, self.block = n, block
        self._last = -2

    @classmethod
    def of_arrow(cls, table: Any) -> BlockRows:
        return cls(table.num_rows, lambda a, b: table.slice(a, b - a).to_pylist())

    @classmethod
    def of_dataset(cls, dataset: Any) -> BlockRows:
        """Rows as Arrow stores them: a format saved with the folder (numpy, some columns) is not the data, and
        `datasets`' own decoding would turn an Image or Audio column (Hub Parquet exports mark them so) into
        decoded media, or fail on a missing decoder, where the data is plain {bytes, path} structs."""
        table = dataset.with_format("arrow")
        return cls(len(dataset), lambda a, b: table[a:b].to_pylist())

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):  # type: ignore[override]
        sequential, self._last = index in (0, self._last + 1), index
        owner, start, rows = _KEPT[0]
        if owner is self and start <= index < start + len(rows):
            return rows[index - start]
        if not sequential:
            return self.block(index, index + 1)[0]
        rows = self.block(index, min(index + ARROW_BLOCK, self.n))
        _KEPT[0] = (self, index, rows)
        return rows[0]


_KEPT: list[tuple[BlockRows | None, int, list[Record]]] = [(None, 0, [])]  # the one converted block kept


class TextFiles(Sequence[Record]):
    """Each .txt file of a folder as a {"text": …} record, read and decoded when asked for."""

    def __init__(self, files: list[Path], decode: Callable[[bytes, Path], str]):
        self.files, self.decode = files, decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):  # type: ignore[override]
        return {"text": self.decode(self.files[index].read_bytes(), self.files[index])}


def location(records: Sequence[Record], index: int) -> str:
    """Where record `index` came from: its file and line when `records` came from `read_records`, else its 1-based
    position ("record 3")."""
    return records.where(index) if isinstance(records, Records) else f"record {index + 1}"
