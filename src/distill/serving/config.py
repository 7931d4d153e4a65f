"""What a `distill serve` server is set up with: its name for the model, its limits, its batching and its key.

Safe by default: the server binds 127.0.0.1; listening on any other address (the network, 0.0.0.0) needs an API
key, or anyone who can reach the port can use the model. The key comes from an environment variable named on the
command line — a key typed on the command line would sit in the shell's history and in `ps` for everyone — and it is
never printed or logged. This module imports nothing heavy, so the CLI refuses a bad address in a second.

Every limit exists so that one request cannot take the server from everyone else (a 100k-token `max_tokens`, a
10 MB body, `n: 10000`); each refusal names the field it is about (docs/serve.md lists them). The defaults suit one
small model on a laptop CPU; the CLI exposes each one.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from distill.errors import DistillError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 1 << 20  # a request body larger than this → 413
    max_tokens: int = 2048  # per choice: `max_tokens` / `max_completion_tokens` above this → 400
    max_n: int = 16  # choices per prompt
    max_choices: int = 64  # prompts × n in one request
    max_logprobs: int = 20  # `logprobs` (completions) / `top_logprobs` (chat), as vLLM's default
    max_prompt_tokens: int | None = None  # None: the model's context window
    request_timeout_s: float = 600.0  # waiting in the queue and generating together; → 504 past it

    def __post_init__(self) -> None:
        numbers = {"max_body_bytes": self.max_body_bytes, "max_tokens": self.max_tokens, "max_n": self.max_n,
                   "max_choices": self.max_choices, "request_timeout_s": self.request_timeout_s}
        for name, value in numbers.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if self.max_logprobs < 0 or (self.max_prompt_tokens is not None and self.max_prompt_tokens <= 0):
            raise ValueError("max_logprobs must be ≥ 0 and max_prompt_tokens positive")


@dataclass(frozen=True)
class ServeConfig:
    """`model_name` is what clients send as `model`; `api_key` None means no key is asked for (loopback only,
    which the launcher enforces). `batch_window_s` is how long the worker waits, after the first request of a batch
    arrives, for others to join it, renewed by each arrival (at most ten windows): a few milliseconds cost a lone
    request little and let a burst share one pass."""

    model_name: str
    limits: ServeLimits = field(default_factory=ServeLimits)
    max_batch_size: int = 16
    batch_window_s: float = 0.005
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name is empty")
        if self.max_batch_size < 1 or self.batch_window_s < 0:
            raise ValueError("max_batch_size must be ≥ 1 and batch_window_s ≥ 0")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key is empty")


class ServeError(DistillError):
    """The server cannot start as asked: an address without a key, a key variable unset, a port in use."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_api_key(env_name: str | None, host: str) -> str | None:
    """The key from the environment variable `env_name`; refuses a non-loopback host without one."""
    if env_name is None:
        if not is_loopback(host):
            raise ServeError(f"--host {host} listens beyond this machine, so it needs an API key: put one in an "
                             "environment variable and pass its name with --api-key-env NAME (or keep the default "
                             "--host 127.0.0.1)")
        return None
    if not _ENV_NAME.fullmatch(env_name):
        # never repeat the value: a key pasted here by mistake must not land in the terminal's scrollback
        raise ServeError("--api-key-env takes the *name* of an environment variable (e.g. DISTILL_API_KEY), not "
                         "the key itself")
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ServeError(f"--api-key-env {env_name}: the environment variable ${env_name} is not set or empty; "
                         f"export {env_name}=… first")
    return key
