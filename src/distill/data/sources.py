"""Read records (dicts) from the supported sources: JSONL, Parquet, a folder of .txt files, a `datasets` folder
(saved with `save_to_disk`), or a `builtin:NAME` data set. Problems name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.builtin.registry import is_builtin, materialize
from distill.errors import DataError

Record = dict[str, Any]


def read_records(source: str, field: str = "data.train", limit: int | None = None) -> list[Record]:
    path = Path(source)
    if is_builtin(source):
        path = builtin_split(source, field)
    if not path.exists():
        raise DataError(f"{field}: no such file or folder: {source}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            records = _read_saved_dataset(path, field)
        elif (path / "train.jsonl").exists():  # built-in data sets are folders with a train.jsonl
            records = _read_jsonl(path / "train.jsonl", field, limit)
        else:
            records = _read_text_folder(path, field)
    elif path.suffix == ".jsonl":
        records = _read_jsonl(path, field, limit)
    elif path.suffix == ".parquet":
        records = _read_parquet(path, field)
    else:
        raise DataError(f"{field}: unsupported file type {path.suffix!r} ({source}); use .jsonl, .parquet, "
                        "a folder of .txt files or a `datasets` folder")
    records = records[:limit] if limit else records
    if not records:
        raise DataError(f"{field}: {source} holds no records")
    return records


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


def _read_jsonl(path: Path, field: str, limit: int | None) -> list[Record]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{field}: {path}, line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{field}: {path}, line {number}: each line must be a JSON object")
            records.append(record)
            if limit and len(records) >= limit:
                break
    return records


def _read_parquet(path: Path, field: str) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:
        raise DataError(f"{field}: cannot read Parquet file {path}: {exc}") from None


def _read_saved_dataset(path: Path, field: str) -> list[Record]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{field}: cannot load the `datasets` folder {path}: {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{field}: {path} has splits {list(loaded)} but no 'train'")
        loaded = loaded["train"]
    return loaded.to_list()


def _read_text_folder(path: Path, field: str) -> list[Record]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{field}: folder {path} has no .txt files (nor a `datasets` dataset_info.json)")
    return [{"text": f.read_text(encoding="utf-8", errors="replace")} for f in files]
