"""A plain JSONL file as a sequence of records read by offset: what lets a multi-GB corpus be tokenized without
holding it (see records.py).

Opening the file reads it once: each line is decoded and parsed then (and let go), so a line that is not a JSON
object, or not valid text in the declared encoding, is an error naming its file and line before any work starts.
Only each record's offset, length and line number are kept (24 bytes). Reading a record parses its line again, far
cheaper than tokenizing it. Blank lines (whitespace of any kind) are skipped, and a byte-order mark only on line 1,
exactly as the whole-file reader for compressed JSONL does (sources.py), so one file reads the same either way.

The file is read through a descriptor kept open for the next read: at most `MAX_OPEN` files are (a glob of 10,000
shards must not hold 10,000 descriptors), and each descriptor belongs to the file as it was indexed (device, inode,
size, modification time). A file replaced or rewritten since is an error, never another file's bytes.
"""

from __future__ import annotations

import json
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.errors import DataError

BOM = "\ufeff"
MAX_OPEN = 32
Identity = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
_OPEN: OrderedDict[tuple[Path, Identity], Any] = OrderedDict()  # the files read last, most recent last
_LOCK = threading.Lock()


class JsonlLines(Sequence[dict[str, Any]]):
    """The JSON objects of a plain (uncompressed) JSONL file in an encoding that writes newlines as 0x0A."""

    def __init__(self, path: Path, field: str, encoding: str, limit: int | None = None):
        self.path, self.field, self.encoding = path, field, encoding
        self.offsets, self.lengths, self.numbers = array("q"), array("q"), array("q")
        with open(path, "rb") as f:
            self.identity = _identity(os.fstat(f.fileno()))
            offset = 0
            for number, raw in enumerate(f, start=1):
                if parse_line(raw, number, path, field, encoding) is not None:
                    self.offsets.append(offset)
                    self.lengths.append(len(raw))
                    self.numbers.append(number)
                    if limit and len(self.offsets) >= limit:
                        break
                offset += len(raw)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index):  # type: ignore[override]
        number = self.numbers[index]
        with _LOCK:  # a descriptor is never closed by another thread while this one reads through it
            f = self._file()
            f.seek(self.offsets[index])
            raw = f.read(self.lengths[index])
        record = parse_line(raw, number, self.path, self.field, self.encoding)
        if record is None:  # the line was text when indexed: only a rewrite in place makes it blank
            raise self._changed()
        return record

    def _file(self) -> Any:
        key = (self.path, self.identity)
        f = _OPEN.pop(key, None)
        if f is None:
            f = open(self.path, "rb")  # noqa: SIM115 - kept for the next read, closed when evicted
            if _identity(os.fstat(f.fileno())) != self.identity:
                f.close()
                raise self._changed()
            while len(_OPEN) >= MAX_OPEN:
                _OPEN.popitem(last=False)[1].close()
        _OPEN[key] = f
        return f

    def _changed(self) -> DataError:
        return DataError(f"{self.field}: {self.path} changed after it was read (replaced or rewritten while the "
                         "records were being used); run again")


def _identity(stat: os.stat_result) -> Identity:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def parse_line(raw: bytes, number: int, path: Path, field: str, encoding: str) -> dict[str, Any] | None:
    """One JSONL line as a record, or None for a blank line; errors name the file and line."""
    return parse_text(decode_line(raw, number, path, field, encoding), number, path, field)


def decode_line(raw: bytes, number: int, path: Path, field: str, encoding: str) -> str:
    """Physical line `number` of a file as text, strictly decoded; a byte-order mark is dropped on line 1 only."""
    try:
        line = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise undecodable(exc, f"{path}, line {number}", field, encoding) from None
    return line.removeprefix(BOM) if number == 1 else line


def parse_text(line: str, number: int, path: Path, field: str) -> dict[str, Any] | None:
    """One decoded JSONL line as a record, or None for a blank line."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{field}: {path}, line {number}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{field}: {path}, line {number}: each line must be a JSON object")
    return record


def undecodable(exc: UnicodeDecodeError, location: str, field: str, encoding: str) -> DataError:
    byte = exc.object[exc.start]
    return DataError(
        f"{field}: {location}: not valid {encoding} text (byte 0x{byte:02x}: {exc.reason}); set data.encoding to "
        f"the file's encoding (e.g. latin-1 or cp1252), or convert the file to UTF-8 with "
        f"`iconv -f LATIN1 -t UTF-8 IN > OUT`"
    )
