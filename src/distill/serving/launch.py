"""Start a server: check the address and the key (config.py), bind, load the model, and run uvicorn until
interrupted. The socket is bound before the model loads and before uvicorn starts, so a port in use is one line
within a second, not a traceback after the load."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from distill.errors import ModelError
from distill.generation.engine import Engine, LogitsProcessor
from distill.models import DTYPES, load_causal_lm, load_tokenizer
from distill.serving.app import create_app
from distill.serving.config import ServeConfig, ServeError, read_api_key
from distill.serving.service import Service


def load_model(name: str, dtype: str = "float32", device: str = "auto") -> tuple[Any, Any]:
    """The model (eval mode, no gradients) and its tokenizer, from a hub id, a folder or `builtin:NAME`."""
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    tokenizer = load_tokenizer("MODEL", name)
    model = load_causal_lm("MODEL", name, None, False, DTYPES[dtype])
    target = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        model.to(target)
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"--device {device}: cannot move the model there ({str(exc).splitlines()[0]})") from None
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def build_service(model: Any, tokenizer: Any, config: ServeConfig,
                  logits_processors: Sequence[LogitsProcessor] = ()) -> Service:
    """The engine and its worker for `model`; `logits_processors` (defenses) are applied to every step and listed
    in /v1/models."""
    engine = Engine(model, tokenizer, max_batch_size=config.max_batch_size, logits_processors=logits_processors)
    return Service(engine, config)


@dataclass
class Listening:
    url: str
    sock: socket.socket


def bind(host: str, port: int) -> Listening:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or "
                         "--host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    return Listening(f"http://{shown}:{sock.getsockname()[1]}", sock)


def banner(url: str, config: ServeConfig, key_env: str | None) -> str:
    key = f'os.environ["{key_env}"]' if key_env else '"none"'
    limits = config.limits
    return "\n".join([
        f"serving {config.model_name!r} at {url}/v1  (batch ≤ {config.max_batch_size} rows, max_tokens ≤ "
        f"{limits.max_tokens}, n ≤ {limits.max_n}; {'API key required' if key_env else 'no API key: loopback only'})",
        "point the openai client at it:",
        f'  from openai import OpenAI; client = OpenAI(base_url="{url}/v1", api_key={key})',
        f'  client.chat.completions.create(model="{config.model_name}", messages=[{{"role": "user", '
        '"content": "Hello"}])',
        f"or a distill recipe: teacher.api: {{base_url: {url}, model: {config.model_name}"
        + (f", api_key_env: {key_env}}}" if key_env else "}"),
        "stop with Ctrl-C",
    ])


def run(service: Service, listening: Listening, *, log_level: str = "info",
        echo: Callable[[str], None] = print) -> None:
    """Serve until interrupted, then stop the worker."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level=log_level, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[listening.sock])
    finally:
        service.close()
        listening.sock.close()
        echo("server stopped")


def serve_model(model: str, config: ServeConfig, *, host: str, port: int, api_key_env: str | None,
                dtype: str = "float32", device: str = "auto", log_level: str = "info",
                echo: Callable[[str], None] = print) -> None:
    """`distill serve`: key and address checked first, port bound second (both fail in a second, not after the
    model has loaded), then the model loaded and served until Ctrl-C. The CLI reads the key before it imports
    anything heavy; reading it again here keeps this function safe for other callers."""
    config = replace(config, api_key=read_api_key(api_key_env, host))
    listening = bind(host, port)
    try:
        echo(f"loading {model} ({dtype}) …")
        loaded, tokenizer = load_model(model, dtype, device)
        service = build_service(loaded, tokenizer, config)
    except BaseException:
        listening.sock.close()
        raise
    echo(banner(listening.url, config, api_key_env))
    run(service, listening, log_level=log_level, echo=echo)
