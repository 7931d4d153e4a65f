"""Shared benchmark machinery: each contender runs in its own process, contenders alternate, runs repeat, and the
summary reports medians plus per-repetition ratios (this machine is shared and noisy; only ratios measured in one
run mean something). Output is JSON lines on stdout, the last line a summary. Never imported by the tests."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def provenance() -> dict[str, Any]:
    """Versions, git hash and machine, attached to every summary."""
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    info = {"git": commit, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


def reset_peak_rss() -> None:
    """Start a new peak-memory window (Linux: writing 5 to clear_refs resets VmHWM); elsewhere a no-op."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start or the last `reset_peak_rss` (VmHWM on Linux)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonPeak:
    """The peak of this process's anonymous resident memory (RssAnon: heap, Arrow buffers, tensors), sampled every
    `interval` seconds by a thread. VmHWM also counts the pages of memory-mapped files, which are shared page cache
    the kernel can drop; a reader that maps its data shows up there but not here. A sampled peak can miss a spike
    shorter than the interval. Linux only (elsewhere 0)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak_mb, self.base_mb = interval, 0.0, 0.0  # both read when the window opens
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _now() -> float:
        return _status_mb("RssAnon") or 0.0

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._now())

    def __enter__(self) -> AnonPeak:
        self.base_mb = self.peak_mb = self._now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._now())

    @property
    def rise_mb(self) -> float:
        """The peak above what the process held when the window opened."""
        return self.peak_mb - self.base_mb


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def emit_summary(summary: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> None:
    """Print the summary line last, with the distill source digests every run saw (one digest: no run measured other
    code) and the provenance."""
    digests = sorted({r["src_digest"] for rs in results.values() for r in rs})
    summary["src_digests"], summary["same_src_in_all_runs"] = digests, len(digests) == 1
    summary["provenance"] = provenance()
    emit(summary)


def run_worker(script: Path, contender: str, args: Sequence[str], timeout: float = 3600) -> dict[str, Any]:
    """Run `script --worker CONTENDER ARGS` in a fresh process; its last stdout line is its JSON result."""
    proc = subprocess.run([sys.executable, str(script), "--worker", contender, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(script: Path, contenders: Sequence[str], repeats: int, args: Sequence[str]
              ) -> dict[str, list[dict[str, Any]]]:
    """Run every contender once per repetition, in rotating order; print each result as it arrives."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for rep in range(repeats):
        order = list(contenders[rep % len(contenders):]) + list(contenders[: rep % len(contenders)])
        for contender in order:
            result = run_worker(script, contender, args)
            results[contender].append(result)
            emit({"repetition": rep, "contender": contender, **result})
    return results


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def median_ratio(values: list[float]) -> float:
    """The median of per-repetition ratios, to the 4 places the ratios themselves carry."""
    return round(statistics.median(values), 4)


def ratios(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    """a / b for each repetition."""
    return [round(x[key] / y[key], 4) for x, y in zip(a, b, strict=True)]


def worker_main(contenders: dict[str, Callable[[Any], dict[str, Any]]], parse: Callable[[list[str]], Any]) -> bool:
    """If this process was started as a worker, run it, print its result, and return True."""
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        contender = sys.argv[2]
        result = contenders[contender](parse(sys.argv[3:]))
        print(json.dumps(result), flush=True)
        return True
    return False


def model_arguments(parser: Any, default: str = "builtin:smollm2-135m-instruct") -> None:
    """MODEL, --tiny and --threads, for the benches that run one model (generate, serve)."""
    parser.add_argument("model", nargs="?", default=default)
    parser.add_argument("--tiny", action="store_true", help="Use builtin:tiny-teacher (a smoke test).")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 is steadier on a machine shared with other jobs")


def chosen_model(args: Any) -> str:
    """Apply --threads and return the model to run (--tiny: the tiny test model)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return "builtin:tiny-teacher" if args.tiny else args.model
