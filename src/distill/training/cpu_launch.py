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
import sys

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
    """Run `python -m distill ARGV` as `n_processes` torchrun workers; returns the first failing exit code or 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun([
            "--nproc_per_node", str(n_processes),
            "--master_addr", os.environ["MASTER_ADDR"],
            "--master_port", os.environ.get("MASTER_PORT", "29500"),
            "-m", "distill", *argv,
        ])
    except ChildFailedError as exc:  # each worker already printed its own one-line error
        codes = [failure.exitcode for failure in exc.failures.values()]
        return next((code for code in codes if code not in (0, None)), 1)
    return 0


def maybe_relaunch() -> None:
    """Called first thing by the CLI: replace this process by N workers if accelerate asked for N on the CPU."""
    n_processes = requested_cpu_processes()
    if n_processes > 1:
        sys.exit(relaunch(n_processes, sys.argv[1:]))
