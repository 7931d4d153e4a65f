"""Read records (dicts) from the supported sources: JSONL (plain or compressed), JSON, CSV/TSV, Parquet, a glob or
a folder of such shards, a folder of .txt files, a `datasets` folder (saved with `save_to_disk`), or a
`builtin:NAME` data set (file kinds and shards: `file_formats.py`). Problems name the file and line.

Text is decoded strictly in the declared encoding (`data.encoding`): a file in another encoding is an error that
names the file and line, never text silently full of U+FFFD. Records remember where they came from
(`Records.where`), so later problems — a missing field, content the chat template cannot render — name the file
and line too.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from distill.builtin.registry import is_builtin, materialize
from distill.data.file_formats import check_shards, expand, kind_of, open_binary, read_with_datasets, shards_in
from distill.errors import DataError
from distill.recipe.base import is_glob

Record = dict[str, Any]
BOM = "\ufeff"


class Records(list[Record]):
    """The records of one source, and where each came from: `where(i)` is "FILE, line N" for JSONL (the physical
    line), "FILE, row N" for Parquet, JSON, CSV and `datasets` folders, and the file itself for a folder of .txt
    files; records of several files (shards, a mixture) ask the part they came from.

    A list, so callers that only want the records use it as one; slicing gives a plain list (use `head`)."""

    def __init__(self, records: Iterable[Record], path: Path, unit: Literal["line", "row", "file", "part"],
                 numbers: Sequence[int] | None = None, files: Sequence[Path] | None = None,
                 origins: Sequence[tuple[Records, int]] | None = None):
        super().__init__(records)
        self.path, self.unit = path, unit
        self._numbers, self._files = list(numbers or ()), list(files or ())
        self._origins = list(origins or ())  # unit "part": each record's (part, index in it)

    @classmethod
    def concat(cls, parts: Sequence[Records], path: Path) -> Records:
        """The records of `parts` one after the other (shards of one source)."""
        offsets = [0]
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        merged = cls([r for part in parts for r in part], path, "part")
        merged._origins = _Origins(parts, offsets)  # type: ignore[assignment]
        return merged

    @classmethod
    def picked(cls, picks: Sequence[tuple[Records, int]], path: Path) -> Records:
        """The records `picks` names — (part, index) each, in that order (a mixture)."""
        return cls([part[i] for part, i in picks], path, "part", origins=picks)

    def where(self, index: int) -> str:
        """Where record `index` (0-based) came from, for messages a person reads."""
        if self.unit == "part":
            part, inner = self._origins[index]
            return part.where(inner)
        if self.unit == "file":
            return str(self._files[index])
        number = self._numbers[index] if self.unit == "line" else index + 1
        return f"{self.path}, {self.unit} {number}"

    def replaced(self, rows: Sequence[Record]) -> Records:
        """`rows` (one per record, in order) in place of the records, still knowing where each came from."""
        if len(rows) != len(self):
            raise ValueError(f"{len(rows)} rows for {len(self)} records")
        new = Records(rows, self.path, self.unit, self._numbers, self._files)
        new._origins = self._origins
        return new

    def head(self, n: int) -> Records:
        """The first `n` records, still knowing where they came from."""
        if self.unit == "part":
            return Records.picked([self._origins[i] for i in range(min(n, len(self)))], self.path)
        return Records(self[:n], self.path, self.unit, self._numbers[:n], self._files[:n])


class _Origins:
    """(part, index in it) of each record of concatenated parts, found by bisection instead of stored per record."""

    def __init__(self, parts: Sequence[Records], offsets: list[int]):
        self.parts, self.offsets = parts, offsets

    def __getitem__(self, index: int) -> tuple[Records, int]:
        part = bisect.bisect_right(self.offsets, index) - 1
        return self.parts[part], index - self.offsets[part]


def location(records: Sequence[Record], index: int) -> str:
    """Where record `index` came from: its file and line when `records` came from `read_records`, else its 1-based
    position ("record 3")."""
    return records.where(index) if isinstance(records, Records) else f"record {index + 1}"


def read_records(source: str, field: str = "data.train", limit: int | None = None,
                 encoding: str = "utf-8", split: str = "train") -> Records:
    """The records of `source`; `encoding` decodes JSONL and .txt files (strictly); `split`: the split of a
    `datasets` folder that has several (a source without splits is read whole: `refuse_split` first, where a recipe
    asked for a split). Errors start with `field`."""
    path = Path(source)
    if is_builtin(source):
        path = builtin_split(source, field)
    if not is_builtin(source) and is_glob(source) and not path.exists():
        records = _read_shards(expand(source, field), path, field, limit, encoding)
    elif not path.exists():
        raise DataError(f"{field}: no such file or folder: {source}")
    elif path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            records = _read_saved_dataset(path, field, split)
        elif (path / "train.jsonl").exists():  # built-in data sets are folders with a train.jsonl
            records = _read_jsonl(path / "train.jsonl", field, limit, encoding)
        elif shards := shards_in(path):
            texts = sorted(path.rglob("*.txt"))
            if texts:
                raise DataError(f"{field}: {path} holds both .txt documents ({texts[0].name}, …) and data files "
                                f"({shards[0].name}, …); point data.train at one kind (a glob such as "
                                f"{path}/*{''.join(shards[0].suffixes)})")
            records = _read_shards(check_shards(shards, source, field), path, field, limit, encoding)
        else:
            records = _read_text_folder(path, field, encoding)
    elif kind_of(path) is not None:
        records = _read_file(path, field, limit, encoding)
    else:
        raise DataError(f"{field}: unsupported file type {''.join(path.suffixes) or path.name!r} ({source}); use "
                        ".jsonl, .json, .csv, .tsv or .parquet (.jsonl, .json and .csv may be compressed: .gz, "
                        ".bz2, .xz, .zst), a glob or folder of them, a folder of .txt files or a `datasets` folder")
    records = records.head(limit) if limit else records
    if not records:
        raise DataError(f"{field}: {source} holds no records")
    return records


def has_splits(path: Path) -> bool:
    """Whether a source has named splits: only a `datasets` folder saved from a DatasetDict does (its
    dataset_dict.json lists them). A file, a glob or folder of shards, a folder of .txt files, a `datasets` folder
    of one Dataset and a built-in data set's file are each one body of records."""
    return path.is_dir() and (path / "dataset_dict.json").exists()


def refuse_split(source: str, field: str, split: str, split_field: str) -> None:
    """Refuse the split `split` that the recipe field `split_field` asks of `source` (read as `field`) when the
    source has no splits: read whole instead, the split would be silently ignored. A source that does not exist is
    left for `read_records` to name."""
    if has_splits(Path(source)) or not (is_builtin(source) or is_glob(source) or Path(source).exists()):
        return
    if is_builtin(source):
        instead = f"a built-in data set names its split in the source: {field}: {source.partition('/')[0]}/{split}"
    else:
        instead = f"point {field} at the {split!r} data itself"
    raise DataError(f"{split_field}: asks for the split {split!r}, but {field} ({source}) has no splits: only a "
                    f"`datasets` folder saved from a DatasetDict (save_to_disk) has them; {instead}, or remove "
                    f"{split_field}")


def _read_file(path: Path, field: str, limit: int | None, encoding: str) -> Records:
    kind, _ = kind_of(path)  # type: ignore[misc]
    if kind == ".jsonl":
        return _read_jsonl(path, field, limit, encoding)
    if kind == ".parquet":
        return _read_parquet(path, field)
    return Records(read_with_datasets(path, field), path, "row")


def _read_shards(files: list[Path], path: Path, field: str, limit: int | None, encoding: str) -> Records:
    """The shards in order, read until `limit` records are in."""
    parts: list[Records] = []
    for file in files:
        parts.append(_read_file(file, field, limit, encoding))
        if limit and sum(len(p) for p in parts) >= limit:
            break
    return Records.concat(parts, path)


def builtin_split(source: str, field: str) -> Path:
    """`builtin:NAME` reads its `train.jsonl`, `builtin:NAME/SPLIT` its `SPLIT.jsonl` (builtin:shakespeare/heldout)."""
    name, _, split = source.partition("/")
    folder = materialize(name, "data")
    path = folder / f"{split or 'train'}.jsonl"
    if not path.exists():
        splits = sorted(p.stem for p in folder.glob("*.jsonl"))
        raise DataError(f"{field}: {name} has no split {split or 'train'!r}; it has: "
                        + ", ".join(f"{name}/{s}" for s in splits))
    return path


def _read_jsonl(path: Path, field: str, limit: int | None, encoding: str) -> Records:
    records, numbers = [], []
    for number, line in _lines(path, field, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{field}: {path}, line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{field}: {path}, line {number}: each line must be a JSON object")
        records.append(record)
        numbers.append(number)
        if limit and len(records) >= limit:
            break
    return Records(records, path, "line", numbers=numbers)


def _lines(path: Path, field: str, encoding: str) -> Iterator[tuple[int, str]]:
    """The physical lines of a text file with their 1-based numbers, decoded strictly.

    Read as bytes and decoded line by line (streaming, so `limit` stops early in a big file, and a decoding error
    knows its line) wherever the encoding writes a newline as the byte 0x0A; other encodings (UTF-16, UTF-32) are
    decoded whole."""
    if "\n".encode(encoding) != b"\n":
        with open_binary(path) as f:
            text = _decode(f.read(), path, field, encoding)
        yield from enumerate(text.split("\n"), start=1)  # not splitlines: JSON strings may hold U+2028 raw
        return
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _undecodable(exc, f"{path}, line {number}", field, encoding) from None
            yield number, line.removeprefix(BOM) if number == 1 else line


def _decode(data: bytes, path: Path, field: str, encoding: str) -> str:
    """A whole file's text; an error names the line of the first byte that does not decode."""
    try:
        return data.decode(encoding).removeprefix(BOM)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise _undecodable(exc, f"{path}, line {line}", field, encoding) from None


def _undecodable(exc: UnicodeDecodeError, location: str, field: str, encoding: str) -> DataError:
    byte = exc.object[exc.start]
    return DataError(
        f"{field}: {location}: not valid {encoding} text (byte 0x{byte:02x}: {exc.reason}); set data.encoding to "
        f"the file's encoding (e.g. latin-1 or cp1252), or convert the file to UTF-8 with "
        f"`iconv -f LATIN1 -t UTF-8 IN > OUT`"
    )


def _read_parquet(path: Path, field: str) -> Records:
    import pyarrow.parquet as pq

    try:
        return Records(pq.read_table(path).to_pylist(), path, "row")
    except Exception as exc:
        raise DataError(f"{field}: cannot read Parquet file {path}: {exc}") from None


def _read_saved_dataset(path: Path, field: str, split: str = "train") -> Records:
    import datasets

    if (path / "state.json").exists() and not any(path.glob("*.arrow")):  # datasets fails on it with an IndexError
        raise DataError(f"{field}: {path} is an empty `datasets` folder (no data files); it holds no records")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{field}: cannot load the `datasets` folder {path}: {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{field}: {path} has splits {list(loaded)} but no {split!r}; choose one with "
                            "data.split (or a mixture source's split)")
        loaded = loaded[split]
    return Records(loaded.to_list(), path, "row")


def _read_text_folder(path: Path, field: str, encoding: str) -> Records:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{field}: folder {path} has no .txt files, data files (.jsonl, .json, .csv, .parquet, …) "
                        f"nor a `datasets` dataset_info.json; for shards in subfolders use a glob such as "
                        f"{path}/**/*.parquet")
    texts = [_decode(f.read_bytes(), f, field, encoding) for f in files]
    return Records([{"text": t} for t in texts], path, "file", files=files)
