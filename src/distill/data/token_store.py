"""Tokenized data on disk, memory-mapped: tokenized once, shared by every process and every later run.

Tokenizing a large corpus costs minutes and, held as Python lists, gigabytes in every process. The store writes a
data set's examples once as flat int32 arrays (ids, labels, and position ids for packed documents that must not
see each other) with an index of (offset, length, targets) per example, and reads them through memory maps: the
operating system shares the pages between processes and loads only what a batch touches.

A store is keyed by everything its contents depend on: the tokenizer's full definition (`tokenizer_identity`), the
recipe's `data` section, the sha256 of the source files' bytes, this module's format version and distill's version.
A changed file, tokenizer or setting is a different key, so a stale store is never read. A store is written into a
private temporary folder and renamed into place in one step, so readers see a whole store or none, and two processes
that build the same one at once both finish (one rename wins; the other's copy is dropped).

Where: `$DISTILL_CACHE/tokens` (default `~/.cache/distill/tokens`); `data.token_cache: false` tokenizes in memory
every run, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, overload

import numpy as np

from distill import __version__
from distill.builtin.registry import cache_dir, is_builtin
from distill.data.file_formats import expand
from distill.data.formatting import Example
from distill.recipe.base import is_glob

FORMAT_VERSION = 1
META = "meta.json"
STALE_S = 24 * 3600  # a temporary folder this old belongs to a writer that died


def store_root() -> Path:
    return cache_dir() / "tokens"


def source_sha256(source: str) -> str:
    """The sha256 of a data source's bytes: a file, every file under a folder, or every file a glob matches (paths
    and bytes, in sorted order). A built-in data set is named by itself (its contents are fixed by the distill
    version)."""
    if is_builtin(source):
        return hashlib.sha256(source.encode()).hexdigest()
    path = Path(source)
    if not path.exists() and is_glob(source):
        named = [(str(file), file) for file in expand(source, "data.train")]
    else:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        named = [(file.name if file == path else str(file.relative_to(path)), file) for file in files]
    stats = [file.stat() for _, file in named]
    key = tuple((name, str(file), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                for (name, file), st in zip(named, stats, strict=True))
    if key in _HASHED:  # the training and the validation store of one start read the same source: hash it once
        return _HASHED[key]
    digest = hashlib.sha256()
    for name, file in named:
        digest.update(name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    if time.time_ns() - max((st.st_mtime_ns for st in stats), default=0) > RACY_NS:
        _HASHED[key] = digest.hexdigest()  # a file this recent could change again within its timestamp's tick
    return digest.hexdigest()


_HASHED: dict[tuple, str] = {}  # this process's source hashes, by the files' identity, size and modification time
RACY_NS = 2_000_000_000  # as git does for its index: a timestamp this young does not prove the bytes unchanged


def store_key(data_config: dict[str, Any], source_hash: str, tokenizer_hash: str) -> str:
    """The store's name. distill's version is part of it: a release that formats or packs differently (or ships other
    built-in data) must not read an older release's tokens."""
    body = {"format": FORMAT_VERSION, "distill": __version__, "data": data_config, "source": source_hash,
            "tokenizer": tokenizer_hash}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def write_store(root: Path, examples: Iterable[Example], meta: dict[str, Any] | Callable[[], dict[str, Any]],
                segmented: bool | None = None, accept: Callable[[], None] | None = None) -> Path:
    """Write `examples` as a store at `root` (atomically: a temporary sibling renamed into place); returns `root`.
    If another process finished the same store first, its copy is kept.

    The examples are written as they come, so an iterator (`example_stream.ExampleStream`) is never held in memory
    whole; `meta` may then be a function, called once they are all written (counts known only at the end), and
    `segmented` (whether examples carry position ids) must be said up front — for a sequence it is found by
    looking. `accept`, called after the last example, may raise to leave no store behind (e.g. nothing to learn)."""
    if segmented is None:
        examples = list(examples)
        segmented = any(e.position_ids is not None for e in examples)
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}-*"):  # left by a writer killed mid-way (a live one is younger)
        if time.time() - stale.stat().st_mtime > STALE_S:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache's store from other users
    try:
        rows = array("q")  # offset, length, targets per example: 24 bytes each, not a Python tuple's ~150
        touched = time.monotonic()
        with ExitStack() as files:
            ids, labels = (files.enter_context((tmp / name).open("wb")) for name in ("ids.bin", "labels.bin"))
            positions = files.enter_context((tmp / "positions.bin").open("wb")) if segmented else None
            offset = 0
            for e in examples:
                ids.write(np.asarray(e.input_ids, dtype="<i4").tobytes())
                labels.write(np.asarray(e.labels, dtype="<i4").tobytes())
                if positions is None and e.position_ids is not None:  # a caller's bug: they would be lost
                    raise ValueError("an example with position ids in a store said to be unsegmented")
                if positions is not None:
                    positions.write(np.asarray(e.position_ids or range(len(e.input_ids)), dtype="<i4").tobytes())
                rows.extend((offset, len(e.input_ids), e.n_targets))
                offset += len(e.input_ids)
                if time.monotonic() - touched > 60:  # a live build stays younger than STALE_S, however long it runs
                    os.utime(tmp)
                    touched = time.monotonic()
        if accept is not None:
            accept()
        np.save(tmp / "index.npy", np.frombuffer(rows, dtype=np.int64).reshape(-1, 3))
        (tmp / META).write_text(json.dumps({**(meta() if callable(meta) else meta), "format": FORMAT_VERSION,
                                            "examples": len(rows) // 3, "tokens": offset, "segmented": segmented}))
        try:
            os.replace(tmp, root)
        except OSError:  # a finished store is already there (a non-empty folder cannot be replaced)
            if not (root / META).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class TokenStore(Sequence[Example]):
    """The examples of a store, read through memory maps; `store[i]` is an `Example` (lists, as everywhere)."""

    def __init__(self, root: Path):
        self.root = root
        self.meta = json.loads((root / META).read_text())
        self.index = np.load(root / "index.npy")
        tokens = self.meta["tokens"]

        def mapped(name: str) -> np.ndarray:
            return np.memmap(root / name, dtype="<i4", mode="r", shape=(tokens,)) if tokens else np.zeros(0, "<i4")

        self.ids, self.labels = mapped("ids.bin"), mapped("labels.bin")
        self.positions = mapped("positions.bin") if self.meta["segmented"] else None

    def __len__(self) -> int:
        return len(self.index)

    @overload
    def __getitem__(self, i: int) -> Example: ...
    @overload
    def __getitem__(self, i: slice) -> list[Example]: ...

    def __getitem__(self, i: int | slice) -> Example | list[Example]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start, length, _ = (int(v) for v in self.index[i])
        end = start + length
        positions = None if self.positions is None else self.positions[start:end].tolist()
        return Example(self.ids[start:end].tolist(), self.labels[start:end].tolist(), positions)

    def __iter__(self) -> Iterator[Example]:
        return (self[i] for i in range(len(self)))

    @property
    def n_targets(self) -> int:
        return int(self.index[:, 2].sum())
