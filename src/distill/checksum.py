"""File checksums, shared by everything that writes a manifest (checkpoints, teacher caches)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    """sha256 of a file, read in blocks so a large shard never sits in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
