"""Where a result came from: versions, git commit, machine, time (the `provenance` block of a result file)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from distill import __version__
from distill.results.schema import Provenance


def cpu_count() -> int | None:
    """The CPUs this process may run on: its affinity mask where the platform has one (under `taskset`, a container
    limited with cpusets or a batch scheduler, fewer than the machine has), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def provenance() -> dict[str, Any]:
    """The provenance block, as JSON. `cpu_count` is the CPUs available to the process (see `cpu_count`) and
    `torch_threads` the threads torch computes with: they differ under OMP_NUM_THREADS or torch.set_num_threads,
    and throughput numbers depend on both. This layer never imports torch: the thread count is read from the torch
    the process has loaded (always, when it scored a model), else it is null."""
    torch = sys.modules.get("torch")
    return Provenance(distill=__version__, git=_git_commit(), python=platform.python_version(),
                      torch=_version("torch"), transformers=_version("transformers"), platform=platform.platform(),
                      cpu_count=cpu_count(), torch_threads=torch.get_num_threads() if torch is not None else None,
                      created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")).to_json()


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
