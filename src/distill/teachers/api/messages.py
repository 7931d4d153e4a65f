"""The API client's messages: what failed, where, and what to do next, one line each (`client.py` raises them,
redacted of the key). Settings are named as a recipe will hold them, under `FIELD`."""

from __future__ import annotations

import httpx

from distill.recipe.api import ApiConfig

FIELD = "teacher.api."  # where the settings will live in a recipe
GIVING_UP_HINTS = {
    "timeout": f"raise {FIELD}timeout_s, ask for fewer tokens per request, or lower {FIELD}max_concurrency",
    "connection": f"check that the server is running and that {FIELD}base_url is right",
    429: f"the server keeps rate-limiting: lower {FIELD}requests_per_minute or {FIELD}max_concurrency, or raise "
         f"{FIELD}max_retries",
}
SERVER_TROUBLE = f"the server is failing or overloaded: check it (its logs, /health), try again later, or raise " \
                 f"{FIELD}max_retries"


def refusal(response: httpx.Response, said: str, where: str, config: ApiConfig) -> str:
    """Why a request that is not retried failed, and what to do, in one line."""
    env, status = config.api_key_env, response.status_code
    answered = f"{where} answered HTTP {status}{said}"
    if status in (401, 403) and not env:
        return f"{answered}: the server wants an API key; put it in an environment variable and name that " \
               f"variable in {FIELD}api_key_env"
    if status == 401:
        return f"the key in ${env} was refused ({answered}); check the key and that it is for this server"
    if status == 403:
        return f"the key in ${env} may not do this ({answered}); check its permissions for model {config.model!r}"
    if status == 404:
        return f"{answered}; check {FIELD}base_url and {FIELD}model ({config.model!r}): GET /v1/models on the " \
               "server lists its models"
    if 300 <= status < 400:
        location = response.headers.get("location", "elsewhere")
        return f"{answered}: the server redirects to {location}; set {FIELD}base_url to where it points"
    if status == 413:
        return f"{answered}: the request is too large for the server; send fewer tokens per request"
    return f"{answered}: the request was refused and is not retried; fix what the server names (the model, " \
           "sampling settings, max_tokens), or check that the server is OpenAI-compatible"


def server_message(response: httpx.Response) -> str:
    """`, server said: "…"` from an OpenAI-style (`{"error": {"message": …}}`), FastAPI (`{"detail": …}`) or plain
    `{"message": …}` JSON error body; "" when the body is none of those."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if message is None:
        message = body.get("message", body.get("detail"))
    if message is None:
        return ""
    text = " ".join(str(message).split())
    return f', server said: "{text[:300]}{"…" * (len(text) > 300)}"'
