"""Make `accelerate launch --cpu --num_processes N` start N processes.

accelerate (1.x) starts several CPU processes only through `mpirun` (with `--mpirun_hostfile`). Without MPI it starts
a single process, sets MASTER_ADDR as if there were more, and training silently runs on one process. We detect that
case — CPU requested, a master address set, no rank variables from any launcher — read N from the launching
`accelerate` command line or, when it is not there, from the accelerate config file the launcher read
(`--config_file`, or the one `accelerate config` writes), and start the N processes with torch's own launcher
(torchrun). accelerate recognises
those as a multi-CPU run on the gloo backend.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                   "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def requested_cpu_processes() -> int:
    """N when this process was started by `accelerate launch --cpu --num_processes N` without MPI, else 1."""
    if not _truthy(os.environ.get("ACCELERATE_USE_CPU")) or "MASTER_ADDR" not in os.environ:
        return 1
    if any(name in os.environ for name in _RANK_VARIABLES):
        return 1
    try:
        import psutil

        args = psutil.Process().parent().cmdline()
    except Exception:  # no parent information on this platform: nothing to fix
        return 1
    if not any("accelerate" in part for part in args[:3]):
        return 1
    given = _option(args, "--num_processes")
    return int(given) if given is not None else _configured_processes(_option(args, "--config_file"))


def _option(args: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` (accelerate accepts dashes for underscores too)."""
    names = {name, name.replace("_", "-")}
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if key in names:
            return value if sep else (args[i + 1] if i + 1 < len(args) else None)
    return None


def _configured_processes(config_file: str | None) -> int:
    """num_processes from the accelerate config the launcher read (`--config_file`, else `accelerate config`'s
    default file): set there and not on the command line, it was ignored and training silently ran on one
    process."""
    from accelerate.commands.config.config_args import default_config_file, load_config_from_file

    path = config_file or default_config_file
    if not os.path.isfile(path):
        return 1
    try:
        return max(1, int(load_config_from_file(path).num_processes or 1))
    except Exception:  # an unreadable config: accelerate itself will have said so
        return 1


def relaunch(n_processes: int, argv: list[str]) -> int:
    """Run `python -m distill ARGV` as `n_processes` torchrun workers; returns 0 or the failure's exit code.

    When a worker fails with a DistillError, the user sees its one `error:` line once: the others die of it (a
    collective whose peer has gone raises in C++ or Python, or torchrun stops them), and what they and torchrun
    print then is noise (`_one_error_line`)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    with _one_error_line():
        try:
            torchrun([
                "--nproc_per_node", str(n_processes),
                "--master_addr", os.environ["MASTER_ADDR"],
                "--master_port", os.environ.get("MASTER_PORT", "29500"),
                "-m", "distill", *argv,
            ])
        except ChildFailedError as exc:
            return _exit_code([failure.exitcode for failure in exc.failures.values()])
    return 0


def _exit_code(codes: list[int | None]) -> int:
    """The run's exit code from its workers': the largest positive one, since the workers that died because another
    left exit 1 while the one that left says why (2: a user error, 130: interrupted); else 128 + the signal."""
    positive = [code for code in codes if code and code > 0]
    if positive:
        return max(positive)
    return next((128 - code for code in codes if code and code < 0), 1)


@contextmanager
def _one_error_line() -> Iterator[None]:
    """Pass what is written to this process's stderr meanwhile (the workers inherit it, torchrun logs to it) through
    `ErrorLineFilter`. Written through one pipe, a worker's `error:` line comes before anything the others print
    about its death: they learn of it only once it has written the line and exited."""
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, terminal), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes this process's end of the pipe; the forwarder stops when the workers' close
        forwarder.join(timeout=30)
        if not forwarder.is_alive():
            os.close(terminal)


def _forward(source: int, target: int) -> None:
    """Copy the pipe to the real stderr through the filter, draining it to the end whatever happens, so that no
    worker ever blocks on a full pipe (a stderr that was closed, as by `| head`, just stops showing)."""
    broken = False

    def write(data: bytes) -> None:
        nonlocal broken
        try:
            while data and not broken:
                data = data[os.write(target, data):]
        except OSError:
            broken = True

    lines = ErrorLineFilter(write)
    while chunk := os.read(source, 1 << 16):
        lines.feed(chunk)
    lines.close()
    os.close(source)


_MARK = b"error: "  # how the CLI reports a DistillError (cli.py: _reported)
_PIECES = re.compile(rb"[^\n\r]*(?:\r\n|[\n\r])|[^\n\r]+")  # lines with their ends, then a partial last one


class ErrorLineFilter:
    """Copies a byte stream as it comes (partial lines too: progress bars) up to and including the first line that
    starts with `error: `, and drops everything after it. Nothing is held back but the start of a line that could
    still become `error: `."""

    def __init__(self, write: Callable[[bytes], None]):
        self.write, self.held, self.at_line_start, self.done = write, b"", True, False

    def feed(self, data: bytes) -> None:
        for piece in _PIECES.findall(data):
            if self.done:
                return
            if self.at_line_start:
                piece, self.held = self.held + piece, b""
                if _MARK.startswith(piece) or piece.startswith(_MARK):
                    if not piece.endswith((b"\n", b"\r")):
                        self.held = piece  # wait for the rest of the line
                        continue
                    if piece.startswith(_MARK):
                        self.write(piece)
                        self.done = True
                        return
            self.write(piece)
            self.at_line_start = piece.endswith((b"\n", b"\r"))

    def close(self) -> None:
        if self.held and not self.done:
            self.write(self.held)
            self.held = b""


def maybe_relaunch() -> None:
    """Called first thing by the CLI: replace this process by N workers if accelerate asked for N on the CPU."""
    n_processes = requested_cpu_processes()
    if n_processes > 1:
        sys.exit(relaunch(n_processes, sys.argv[1:]))
