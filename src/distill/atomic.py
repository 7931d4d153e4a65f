"""Atomic writes: a killed process never leaves half a file that a later stage would trust."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


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
