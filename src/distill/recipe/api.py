"""The `teacher.api` section of a recipe: an OpenAI-compatible endpoint (`distill serve`, vLLM, SGLang, a commercial
API) that `teachers/api/client.py` talks to. Documented in docs/api.md.

`TeacherConfig.api` holds it (recipe/teacher.py: the teacher needs `model`, `cache` or `api`); `distill cache`
harvests the endpoint's top log-probs into a teacher cache (`teachers/api/harvest.py`) and training reads that cache,
never the API itself (recipe/schema.py refuses an API teacher without `teacher.cache`). Its own section, not fields
of `teacher`, because a client needs all of them together and nothing else of the teacher's.

The key itself never lives in a recipe: `api_key_env` names the environment variable that holds it, the client reads
it once when it is built, and a `base_url` with credentials in it is refused.
"""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, field_validator

from distill.recipe.base import Section

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ApiConfig(Section):
    # should a value be refused, pydantic's own message must not repeat it: it may be a key pasted in the wrong place
    model_config = ConfigDict(hide_input_in_errors=True)  # merged with Section's: extra="forbid", …

    base_url: str = Field(
        description="Root of the OpenAI-compatible server, `http://` or `https://` (e.g. `http://127.0.0.1:8000`); a "
        "trailing `/v1`, as the `openai` client writes it, is fine. No credentials and no query string in it.",
    )
    model: str = Field(min_length=1, description="Model name sent with every request (the server's `/v1/models` id).")
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key, sent as `Authorization: Bearer …`; null = "
        "no key (a local server). The key is never written to a recipe, log, manifest or error message.",
    )
    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once, over all threads.")
    requests_per_minute: float | None = Field(
        default=None,
        gt=0.0,
        description="Client-side rate limit: request starts (retries included) are spaced 60 / this many seconds "
        "apart; null = unlimited.",
    )
    timeout_s: float = Field(
        default=60.0,
        gt=0.0,
        description="Seconds to wait to connect, to send, and for each piece of the answer; a request that runs out "
        "is retried like a 503.",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of one request after a 408, 429, 500, 502, 503, 504, a timeout or a lost connection "
        "(so at most max_retries + 1 attempts), with exponential backoff and full jitter, or the server's "
        "`Retry-After` (each wait capped at 60 s).",
    )

    @field_validator("base_url")
    @classmethod
    def _plain_http_root(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError("must not hold credentials: put the key in an environment variable and name it in "
                             "`api_key_env`")
        if "?" in rest or "#" in rest:
            raise ValueError("must not have a query string or fragment")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # never repeat the value: this is where a key pasted by mistake would land
            raise ValueError("must be the *name* of an environment variable (letters, digits and _, e.g. "
                             "OPENAI_API_KEY), not the key itself")
        return value
