"""Read records (dicts) from the supported sources: JSONL (plain or compressed), JSON, CSV/TSV, Parquet, a glob or
a folder of such shards, a folder of .txt files, a `datasets` folder (saved with `save_to_disk`), or a
`builtin:NAME` data set (file kinds and shards: `file_formats.py`). Problems name the file and line.

Text is decoded strictly in the declared encoding (`data.encoding`): a file in another encoding is an error that
names the file and line, never text silently full of U+FFFD. Records remember where they came from
(`Records.where`), so later problems — a missing field, content the chat template cannot render — name the file
and line too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from distill.builtin.registry import is_builtin, materialize
from distill.data.file_formats import check_shards, expand, kind_of, open_binary, read_with_datasets, shards_in
from distill.data.jsonl_lines import BOM, JsonlLines, decode_line, parse_text, undecodable
from distill.data.records import BlockRows, Record, Records, TextFiles, location
from distill.errors import DataError
from distill.recipe.base import is_glob

log = logging.getLogger(__name__)

__all__ = ["BOM", "Record", "Records", "builtin_split", "has_splits", "location", "read_records", "refuse_split"]


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
    return Records(BlockRows.of_dataset(read_with_datasets(path, field)), path, "row")


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
    """Plain JSONL in an encoding that writes newlines as 0x0A is read lazily (`JsonlLines`); compressed JSONL and
    other encodings are parsed here, whole."""
    if kind_of(path) == (".jsonl", None) and "\n".encode(encoding) == b"\n":
        lines = JsonlLines(path, field, encoding, limit)
        return Records(lines, path, "line", numbers=lines.numbers)
    records, numbers = [], []
    for number, line in _lines(path, field, encoding):
        if (record := parse_text(line, number, path, field)) is None:
            continue
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
            yield number, decode_line(raw, number, path, field, encoding)


def _decode(data: bytes, path: Path, field: str, encoding: str) -> str:
    """A whole file's text; an error names the line of the first byte that does not decode."""
    try:
        return data.decode(encoding).removeprefix(BOM)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise undecodable(exc, f"{path}, line {line}", field, encoding) from None


def _read_parquet(path: Path, field: str) -> Records:
    """Parquet is compressed and encoded, so it cannot be memory-mapped as it is, and reading it whole puts every
    row in anonymous memory (a glob of shards: all of them at once). `datasets` converts it a row group at a time
    into an Arrow file in its cache, once per file, and maps that: rows are then read from the page cache, shared
    and reclaimable, in any order (a mixture's shuffled picks). The footer is read first so that a corrupt file
    says so plainly, and an empty one (which `datasets` cannot convert) is simply empty.

    What `datasets` cannot convert (a map column, which it has no type for) is read whole with pyarrow, as before,
    with a warning; if pyarrow cannot read it either, its own message (a corrupt page, say) is the error."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:
        raise DataError(f"{field}: cannot read Parquet file {path}: {exc}") from None
    if meta.num_rows == 0:
        return Records([], path, "row")
    # the builder's batch defaults to the first row group's rows, and an empty first group stops it
    largest = max(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    try:
        return Records(BlockRows.of_dataset(read_with_datasets(path, field, batch_size=largest)), path, "row")
    except DataError as mapped:
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise DataError(f"{field}: cannot read Parquet file {path}: {exc}") from None
        log.warning(f"{mapped}; read whole into memory instead ({table.nbytes / 2**20:,.1f} MB)")
        return Records(BlockRows.of_arrow(table), path, "row")


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
    return Records(BlockRows.of_dataset(loaded), path, "row")


def _read_text_folder(path: Path, field: str, encoding: str) -> Records:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{field}: folder {path} has no .txt files, data files (.jsonl, .json, .csv, .parquet, …) "
                        f"nor a `datasets` dataset_info.json; for shards in subfolders use a glob such as "
                        f"{path}/**/*.parquet")
    return Records(TextFiles(files, lambda data, file: _decode(data, file, field, encoding)), path, "file",
                   files=files)
