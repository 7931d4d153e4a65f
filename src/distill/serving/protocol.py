"""The request bodies of the OpenAI API that `distill serve` accepts, and the error every refusal is sent as.

Bodies are validated strictly (no "5" for 5, no `true` for 1) and unknown fields are refused, as OpenAI does, with
the field named in `error.param`: a misspelt parameter (`max_token`) must fail loudly rather than silently do
nothing. (vLLM instead ignores unknown fields; see docs/serve.md.) Parameters OpenAI has but this server does not
implement (penalties, `logit_bias`, tools …) are accepted at their neutral value and refused otherwise, so a
client's defaults pass and a real use of them is never ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

INT64 = 2**63
MAX_STOP = 16  # OpenAI allows 4; `distill generate` recipes may list more, and vLLM sets no limit


class ApiError(Exception):
    """A refusal sent as OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Common(_Body):
    """The fields both endpoints share, with OpenAI's ranges."""

    model: str
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for abuse tracking: accepted, not used
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence is empty")
        return value

    @model_validator(mode="after")
    def _neutral_only(self) -> _Common:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0):
                raise _unsupported(name, "is not supported by this server; leave it at 0")
        if self.logit_bias:
            raise _unsupported("logit_bias", "is not supported by this server")
        return self

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_Common):
    """POST /v1/completions. `prompt` is a string, a list of token ids, or a list of either (one choice set each)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        def ids(v: Any) -> bool:
            return isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)

        if isinstance(value, str) or (ids(value) and value):
            return value
        if isinstance(value, list) and value and (all(isinstance(v, str) for v in value)
                                                  or all(ids(v) and v for v in value)):
            return value
        raise ValueError("expected a string, a non-empty list of token ids, or a non-empty list of either "
                         "(all strings or all token-id lists)")

    @model_validator(mode="after")
    def _unsupported_fields(self) -> CompletionRequest:
        if self.suffix:
            raise _unsupported("suffix", "(insertion) is not supported by this server")
        if self.best_of not in (None, self.n):
            raise _unsupported("best_of", "is not supported by this server; leave it out or equal to n")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(v, int) for v in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list) and any(not isinstance(p, dict) or p.get("type") != "text" for p in value):
            raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ResponseFormat(_Body):
    type: Literal["text"]


class ChatRequest(_Common):
    """POST /v1/chat/completions. The messages are rendered with the model's chat template."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Literal["none"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise _unsupported("top_logprobs", "needs logprobs: true")
        if self.tools:
            raise _unsupported("tools", "(tool calling) is not supported by this server")
        return self

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def max_tokens_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


class _Refusal(ValueError):
    """A validator's refusal that names its own field (pydantic would name the model)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _unsupported(param: str, what: str) -> _Refusal:
    return _Refusal(param, f"'{param}' {what}")


def parse_body(raw: bytes, kind: type[BaseModel]) -> Any:
    """The validated request, or an ApiError (400) naming the field: malformed JSON, a wrong type, a value out of
    range, an unknown field, a missing one."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request ({exc}); send a JSON object.",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise _api_error(exc) from None


def _api_error(exc: ValidationError) -> ApiError:
    error = exc.errors(include_url=False, include_input=False)[0]
    param = _param(error["loc"])
    context = error.get("ctx", {}).get("error")
    if isinstance(context, _Refusal):
        return ApiError(400, str(context), param=context.param, code="unsupported_value")
    kind = error["type"]
    if kind == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    if kind == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'.", param=param,
                        code="missing_required_parameter")
    message = error["msg"].removeprefix("Value error, ")
    return ApiError(400, f"Invalid value for '{param}': {message}.", param=param or None, code="invalid_value")


def _param(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'content') → 'messages[0].content'; union branch names (`list[int]`) are left out."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool"):
            continue  # a union's branch name
        else:
            text += f".{part}" if text else part
    return text
