"""`distill serve`: any Hugging Face causal LM behind an OpenAI-compatible HTTP API (docs/serve.md).

One request's path: `app.py` (key, body size, OpenAI-shaped errors) → `protocol.py` (the body, validated) →
`prepare.py` (token ids, limits, one `GenRequest` per choice) → `worker.py` (the one thread that owns the model runs
whatever is waiting as one `Engine.generate` batch) → `render.py` (OpenAI's objects and log-prob formats), with
`service.py` tying them together, `config.py` the settings and the key, and `launch.py` starting uvicorn. Defenses
plug in as the engine's logits processors and are listed in /v1/models.

Only the light modules are imported here (no torch, no fastapi): `from distill.serving.launch import …` for the rest.
"""

from distill.serving.config import ServeConfig, ServeError, ServeLimits, read_api_key

__all__ = ["ServeConfig", "ServeError", "ServeLimits", "read_api_key"]
