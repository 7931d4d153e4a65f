"""One writer per folder: a run, a cache being built. A second `distill train` into the same output_dir used to
"succeed" too, and the last one to finish silently won; now the second is refused with the holder's name.

The lock is an advisory `flock` on `FOLDER/.lock`, so the kernel releases it when its process dies, kill -9
included: a crashed run never leaves a stale lock behind. The file holds who took it (pid, host, command, time) for
the message a refused writer prints. On systems without `fcntl` (Windows) folders are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from distill.errors import DistillError

LOCK_NAME = ".lock"


class FolderLock:
    """`with FolderLock(folder, field, error):` holds the folder's lock for the block, or raises `error` naming
    `field` and the holder."""

    def __init__(self, folder: Path, field: str, error: type[DistillError]):
        self.path = Path(folder) / LOCK_NAME
        self.field, self.error = field, error
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Create the folder if needed and take its lock. Creating the lock file is also the check that the folder
        can be written: a file in its place or a folder without permission is refused in one line, before any
        work."""
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise self.error(f"{self.field}: {folder} is a file, not a folder; choose another")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise self.error(f"{self.field}: cannot write to {folder} ({exc.strerror or exc}); choose a folder you "
                             "can write to") from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the folder is created, not locked
            os.close(fd)
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self.error(f"{self.field}: {self.path.parent} is being written by another distill process "
                             f"({self.holder()}); wait for it to finish, stop it, or choose another folder") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:4]),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']}, `{info['command']}`, since {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def clear_owned(folder: Path, ours: Callable[[str], bool], refuse: Callable[[list[str]], DistillError]) -> None:
    """`--overwrite` for a job's folder, called while holding its lock: delete the files the job wrote (never the
    lock), or — when the folder holds anything else, which is the user's — delete nothing and raise `refuse(names)`."""
    foreign = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and not ours(p.name))
    if foreign:
        raise refuse(foreign)
    for path in folder.iterdir():
        if path.name != LOCK_NAME:
            path.unlink()
