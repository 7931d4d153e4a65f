"""Which files a data source names, and how each kind is opened: compressed JSONL, JSON, CSV and Parquet through the
`datasets` library, shards in a folder or behind a glob.

`sources.read_records` dispatches here for everything but its own fast paths (plain JSONL with line numbers and
strict decoding, `datasets` folders, folders of .txt files; it checks a Parquet file's footer first). JSONL stays
our reader when compressed too (the stdlib and zstandard decompress it as a stream, so problems still name the
line); `.json` (an array of objects, or JSON lines), `.csv`/`.tsv` and `.parquet` go through `datasets`' packaged
builders, which read them offline into an Arrow cache that is memory-mapped.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import io
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from distill.errors import DataError

# the decompressors of `.jsonl.gz` and friends: each opens the file as a binary stream the caller closes
COMPRESSIONS: dict[str, Callable[[Path], IO[bytes]]] = {
    ".gz": lambda p: gzip.open(p, "rb"),  # noqa: SIM115
    ".bz2": lambda p: bz2.open(p, "rb"),  # noqa: SIM115
    ".xz": lambda p: lzma.open(p, "rb"),  # noqa: SIM115
    ".zst": lambda p: _zstd_open(p),
}
# kinds of data file and the `datasets` builder that reads each (None: our own reader)
KINDS: dict[str, str | None] = {".jsonl": None, ".parquet": "parquet", ".json": "json", ".csv": "csv", ".tsv": "csv"}


def _zstd_open(path: Path) -> IO[bytes]:
    import zstandard

    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))


def kind_of(path: Path) -> tuple[str, str | None] | None:
    """(kind, compression) of a data file by its suffixes — (".jsonl", ".gz") for `x.jsonl.gz` — or None."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSIONS else None
    rest = suffixes[:-1] if compression else suffixes
    if not rest or rest[-1] not in KINDS or (compression and rest[-1] == ".parquet"):
        return None
    return rest[-1], compression


def expand(source: str, field: str) -> list[Path]:
    """The data files a glob names, in sorted order; all of one kind."""
    files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    if not files:
        raise DataError(f"{field}: the pattern {source} matches no files (paths are relative to the current "
                        "directory)")
    return check_shards(files, source, field)


def shards_in(folder: Path) -> list[Path]:
    """The data files directly in `folder` (a folder of shards), in sorted order; [] when it has none."""
    return sorted(p for p in folder.iterdir() if p.is_file() and kind_of(p) is not None)


def check_shards(files: list[Path], source: str, field: str) -> list[Path]:
    unknown = [f for f in files if kind_of(f) is None]
    if unknown:
        raise DataError(f"{field}: {unknown[0]} (from {source}) is not a data file distill reads; use .jsonl, "
                        ".json, .csv, .tsv or .parquet shards (.jsonl, .json and .csv may be compressed)")
    kinds = sorted({kind_of(f)[0] for f in files})  # type: ignore[index]
    if len(kinds) > 1:
        raise DataError(f"{field}: {source} mixes {', '.join(kinds)} files; give one kind per source (a "
                        "data.mixture can combine sources of different kinds)")
    return files


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when its name says it is compressed."""
    found = kind_of(path)
    if found is not None and found[1] is not None:
        return COMPRESSIONS[found[1]](path)
    return open(path, "rb")


def read_with_datasets(path: Path, field: str, **options: Any) -> Any:
    """The rows of a .json, .csv or .tsv file (compressed or not) or a .parquet file through `datasets`' packaged
    builders: a `datasets.Dataset`, memory-mapped from its Arrow cache. `options` go to the builder.

    `datasets` reads `data_files` as glob patterns, so the path is escaped: `s[1].parquet` would otherwise read
    `s1.parquet`, or nothing."""
    import datasets

    kind, _ = kind_of(path)  # type: ignore[misc]
    builder = KINDS[kind]
    if builder == "csv":  # every cell as the text it is ("007" stays "007", an empty cell ""), never a guessed number
        sep = "\t" if kind == ".tsv" else ","
        with open_binary(path) as raw:
            header = next(csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig"), delimiter=sep), [])
        options |= {"sep": sep, "na_filter": False,
                    "features": datasets.Features({name: datasets.Value("string") for name in header})}
    try:
        loaded = datasets.load_dataset(builder, data_files=[glob.escape(str(path))], split="train", **options)
    except Exception as exc:
        raise DataError(f"{field}: cannot read {path} as {kind.lstrip('.')}: {_first_line(exc)}") from None
    return loaded


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
