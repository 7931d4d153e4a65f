"""Atomic writes: a killed process never leaves half a file, or half a folder, that a later stage would trust."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, written to `temporary_name` beside `path`, fsynced, then renamed over it: a crash
    leaves the previous file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name))
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows `write_jsonl` wrote (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def temporary_name(name: str) -> str:
    """Where a folder called `name` is written before it is renamed into place: hidden, and never mistaken for it."""
    return f".{name}.tmp"


@contextmanager
def write_folder(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final` to write into; on a normal exit, move it into place as `final`
    (`commit_folder`); on an exception, delete it and re-raise, leaving any old `final` as it was.

    replace=True: one writer (the caller holds a lock or is the main process); the temporary folder is
    `temporary_name(final.name)`, deleted first if a killed writer left it, and an existing `final` is replaced.
    replace=False: several processes may write the same `final` at once (a cache everyone shares); each writes its
    own uniquely named temporary folder, and the first to finish wins: when `final` is already there, the others
    discard theirs, since their contents are equivalent."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        tmp = final.with_name(temporary_name(final.name))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        commit_folder(tmp, final, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a rename, nothing is left there


def commit_folder(tmp: Path, final: Path, *, replace: bool = True) -> None:
    """The closing half of `write_folder`, for a folder filled by several processes between barriers (a
    checkpoint): give `tmp` the umask's permissions, fsync its files and folders, and rename it to `final` (first
    deleting an old `final` when `replace`; else keeping the `final` another process renamed there first)."""
    share_permissions(tmp)
    for folder, _, files in os.walk(tmp):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))
    if replace:
        shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if replace or not final.is_dir():
            raise
        return  # another process finished first; `tmp` is left to the caller (write_folder deletes it)
    _fsync(final.parent)


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's contents (a folder: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def share_permissions(root: Path) -> None:
    """Give everything under `root` the permissions the user's umask asks for. Folders written to a temporary name
    and renamed into place come out private otherwise: safetensors writes 0600 files (and `mkdtemp` 0700 folders)
    whatever the umask, so a run shared with a group or served by another user could not be read."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux's /proc): setting it to read it,
    the only portable way, briefly affects files other threads (a TensorBoard writer) create meanwhile."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
