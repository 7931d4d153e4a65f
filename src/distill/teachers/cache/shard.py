"""One shard of a cache: an append-only file of records and a journal of where each record is.

Writing a record appends its bytes to `shard-NNNNN.bin`, then one fixed-size row (example, offset, length, tokens,
captured mass) to `shard-NNNNN.idx`. The row is written only after the bytes, so after a kill -9 every whole row
points at a whole record. Re-opening a shard drops a torn last row and any bytes no row points at, and appending
carries on from there: each example ends up in the journal exactly once. A shard is finished when its seal
`shard-NNNNN.json` (counts and checksums) exists; the seal is written atomically, last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from distill.atomic import write_json
from distill.checksum import file_sha256

# one journal row per record; `mass` is the teacher mass the record's top-k captured, summed over its tokens
INDEX_DTYPE = np.dtype([("example", "<i8"), ("offset", "<i8"), ("nbytes", "<i8"), ("tokens", "<i8"),
                        ("mass", "<f8")])


def shard_stem(number: int) -> str:
    return f"shard-{number:05d}"


def read_index(path: Path) -> np.ndarray:
    raw = path.read_bytes() if path.exists() else b""
    whole = len(raw) // INDEX_DTYPE.itemsize * INDEX_DTYPE.itemsize
    return np.frombuffer(raw[:whole], dtype=INDEX_DTYPE).copy()


def read_seal(root: Path, number: int) -> dict[str, Any] | None:
    path = root / f"{shard_stem(number)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def remove_shard(root: Path, number: int) -> None:
    for suffix in (".json", ".bin", ".idx"):
        (root / f"{shard_stem(number)}{suffix}").unlink(missing_ok=True)


class ShardWriter:
    """Appends records to shard `number` under `root`, continuing whatever an earlier, killed writer left."""

    def __init__(self, root: Path, number: int):
        self.number = number
        self.data_path = root / f"{shard_stem(number)}.bin"
        self.index_path = root / f"{shard_stem(number)}.idx"
        self.seal_path = root / f"{shard_stem(number)}.json"
        self.rows = self._recover()
        self._end = int(self.rows["offset"][-1] + self.rows["nbytes"][-1]) if len(self.rows) else 0
        self._data = open(self.data_path, "ab", buffering=0)  # noqa: SIM115 — closed in seal()
        self._index = open(self.index_path, "ab", buffering=0)  # noqa: SIM115

    def _recover(self) -> np.ndarray:
        """Keep the longest prefix of journal rows that tile the data file; cut both files to it."""
        rows = read_index(self.index_path)
        size = self.data_path.stat().st_size if self.data_path.exists() else 0
        end = keep = 0
        for row in rows:
            if row["offset"] != end or end + row["nbytes"] > size:
                break
            end += int(row["nbytes"])
            keep += 1
        rows = rows[:keep]
        for path, length in ((self.data_path, end), (self.index_path, keep * INDEX_DTYPE.itemsize)):
            if path.exists() and path.stat().st_size != length:
                os.truncate(path, length)
        return rows

    @property
    def done(self) -> set[int]:
        return {int(e) for e in self.rows["example"]}

    def append(self, example: int, tokens: int, mass: float, record: bytes) -> None:
        _write_all(self._data, record)
        row = np.array([(example, self._end, len(record), tokens, mass)], dtype=INDEX_DTYPE)
        _write_all(self._index, row.tobytes())
        self._end += len(record)
        self.rows = np.concatenate([self.rows, row])

    def seal(self, examples: list[int]) -> dict[str, Any]:
        """Check the journal holds exactly `examples` once each, then write the seal."""
        self.close()
        got = sorted(int(e) for e in self.rows["example"])
        assert got == sorted(examples), f"{self.data_path.name}: journal does not match its examples"
        seal = {"number": self.number, "data": self.data_path.name, "index": self.index_path.name,
                "examples": len(got), "tokens": int(self.rows["tokens"].sum()),
                "captured_mass_sum": float(self.rows["mass"].sum()),
                "bytes": self.data_path.stat().st_size, "index_bytes": self.index_path.stat().st_size,
                "sha256": file_sha256(self.data_path), "index_sha256": file_sha256(self.index_path)}
        write_json(self.seal_path, seal)
        return seal

    def close(self) -> None:
        self._data.close()
        self._index.close()


def _write_all(f, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[f.write(view):]
