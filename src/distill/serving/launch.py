"""Start a server: check the address and the key (config.py), read the defense key file, bind, load the model (and
the defenses' proxies), and run uvicorn until interrupted. The socket is bound before the model loads and before
uvicorn starts, so a port in use is one line within a second, not a traceback after the load. What the banner says
of the defenses is their public view: knobs and key ids, never a secret."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.defenses.build import Defenses
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
                  logits_processors: Sequence[LogitsProcessor] = (), defenses: Defenses | None = None) -> Service:
    """The engine and its worker for `model`; the defenses' processors, then `logits_processors`, are applied to
    every step and listed in /v1/models (with the defenses' public view); the exposure controls shape every answer."""
    processors = [*(defenses.processors if defenses is not None else []), *logits_processors]
    engine = Engine(model, tokenizer, max_batch_size=config.max_batch_size, logits_processors=processors)
    return Service(engine, config, defenses)


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


def banner(url: str, config: ServeConfig, key_env: str | None, defenses: Defenses | None = None) -> str:
    key = f'os.environ["{key_env}"]' if key_env else '"none"'
    limits = config.limits
    shown = [f"defenses: {', '.join(defenses.names()) or 'exposure only'} "
             f"{json.dumps(defenses.public_view(), sort_keys=True)}"] if defenses is not None else []
    return "\n".join([*shown,
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
                echo: Callable[[str], None] = print, defenses: str | Path | None = None) -> None:
    """`distill serve`: key and address checked first, port bound second (both fail in a second, not after the
    model has loaded), then the model loaded and served until Ctrl-C. The CLI reads the key before it imports
    anything heavy; reading it again here keeps this function safe for other callers."""
    from distill.defenses.keys import load_keyfile

    config = replace(config, api_key=read_api_key(api_key_env, host))
    keys = load_keyfile(defenses) if defenses is not None else None  # a malformed file: one line, before the load
    listening = bind(host, port)
    try:
        echo(f"loading {model} ({dtype}) …")
        loaded, tokenizer = load_model(model, dtype, device)
        built = None
        if keys is not None:
            from distill.defenses.build import build_defenses

            built = build_defenses(keys, loaded, tokenizer)
        service = build_service(loaded, tokenizer, config, defenses=built)
    except BaseException:
        listening.sock.close()
        raise
    echo(banner(listening.url, config, api_key_env, built))
    run(service, listening, log_level=log_level, echo=echo)
