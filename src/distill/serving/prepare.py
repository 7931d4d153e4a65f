"""From a validated request to the engine's rows: the prompts' token ids, every limit checked, one `GenRequest`
per choice.

Limits are checked before any work is queued, each refusal naming its field (`error.param`), so a request that
cannot be served costs the server nothing. Choice `i` of a request with prompts × n choices is prompt `i // n`,
sample `i % n` (OpenAI's and vLLM's order); its random stream is keyed by (seed, i), so the same seed gives the same
choices whatever else shares the batch, and without a seed a fresh one is drawn per request.

Exposure controls (`defenses/exposure.py`) act here on what is asked: `logprobs` / `top_logprobs` capped (silently:
the answer has fewer alternatives, as if fewer were asked) and the temperature forced, before the limits are checked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from distill.defenses.exposure import Exposure
from distill.generation.engine import GenRequest
from distill.generation.sampling import SamplingParams
from distill.serving.config import ServeLimits
from distill.serving.protocol import ApiError, ChatRequest, CompletionRequest

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy default


@dataclass(frozen=True)
class Served:
    """What the checks need to know about the served model."""

    name: str
    tokenizer: Any
    n_tokens: int  # ids ≥ this are no token
    context_window: int | None
    limits: ServeLimits
    exposure: Exposure = field(default_factory=Exposure)  # no controls unless a key file sets them


@dataclass
class Work:
    prompts: list[list[int]]  # token ids, one list per prompt
    texts: list[str]  # each prompt's text (what `echo` repeats)
    n: int
    rows: list[GenRequest]  # len(prompts) × n, choice order
    logprobs: int | None  # None: no log-probs; else the number of alternatives per position


def check_model(served: Served, model: str) -> None:
    if model != served.name:
        raise ApiError(404, f"The model `{model}` does not exist; this server serves `{served.name}` "
                       "(GET /v1/models lists it).", param="model", code="model_not_found")


def completion_work(served: Served, req: CompletionRequest) -> Work:
    check_model(served, req.model)
    prompts = req.prompts()
    _check_counts(served, req.n, len(prompts), "prompt")
    logprobs = served.exposure.cap(req.logprobs)
    _check_logprobs(served, logprobs, "logprobs")
    max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
    _check_max_tokens(served, max_tokens, "max_tokens")
    ids, texts = [], []
    for prompt in prompts:
        if isinstance(prompt, str):
            encoded = list(served.tokenizer(prompt)["input_ids"])
            texts.append(prompt)
        else:
            bad = next((t for t in prompt if not 0 <= t < served.n_tokens), None)
            if bad is not None:
                raise ApiError(400, f"Token id {bad} in the prompt is not a token of this model's tokenizer "
                               f"(0 … {served.n_tokens - 1}).", param="prompt", code="invalid_value")
            encoded = list(prompt)
            texts.append(served.tokenizer.decode(prompt))
        if not encoded:
            raise ApiError(400, "The prompt is empty: it encodes to no tokens.", param="prompt", code="invalid_value")
        _check_length(served, len(encoded), max_tokens, "prompt", "max_tokens")
        ids.append(encoded)
    params = _params(served, req.temperature, req.top_p, max_tokens, req.stop_strings(), logprobs)
    return Work(ids, texts, req.n, _rows(ids, req.n, params, req.seed), logprobs)


def chat_work(served: Served, req: ChatRequest) -> Work:
    check_model(served, req.model)
    _check_counts(served, req.n, 1, "messages")
    logprobs = served.exposure.cap((req.top_logprobs or 0) if req.logprobs else None)
    _check_logprobs(served, logprobs, "top_logprobs")
    asked, field = req.max_new_tokens(), req.max_tokens_field()
    if asked is not None:
        _check_max_tokens(served, asked, field)
    text = render_chat(served.tokenizer, req)
    ids = list(served.tokenizer(text, add_special_tokens=False)["input_ids"])
    if asked is None:  # as much as the context leaves, within the server's limit
        room = served.context_window - len(ids) if served.context_window else served.limits.max_tokens
        asked = max(1, min(served.limits.max_tokens, room))
    _check_length(served, len(ids), asked, "messages", field)
    params = _params(served, req.temperature, req.top_p, asked, req.stop_strings(), logprobs)
    return Work([ids], [text], req.n, _rows([ids], req.n, params, req.seed), logprobs)


def render_chat(tokenizer: Any, req: ChatRequest) -> str:
    """The conversation through the model's chat template, ending where the assistant's answer begins."""
    if not getattr(tokenizer, "chat_template", None):
        raise ApiError(400, "This model has no chat template, so it cannot be sent messages; use /v1/completions "
                       "with a prompt instead.", param="messages", code="no_chat_template")
    conversation = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
    try:
        return str(tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))
    except Exception as exc:  # jinja's TemplateError from the template's own checks (e.g. roles must alternate)
        raise ApiError(400, f"The model's chat template refused these messages: {str(exc).strip()[:300]}",
                       param="messages", code="invalid_value") from None


# ------------------------------------------------------------------------------------------------ the checks
def _check_counts(served: Served, n: int, prompts: int, prompt_field: str) -> None:
    limits = served.limits
    if n > limits.max_n:
        raise ApiError(400, f"n = {n} is more than this server allows ({limits.max_n}).", param="n",
                       code="invalid_value")
    if n * prompts > limits.max_choices:
        raise ApiError(400, f"{prompts} prompts × n = {n} make {n * prompts} choices, more than this server allows "
                       f"in one request ({limits.max_choices}); send fewer at a time.",
                       param=prompt_field if prompts > 1 else "n", code="invalid_value")


def _check_logprobs(served: Served, k: int | None, field: str) -> None:
    if k is not None and k > served.limits.max_logprobs:
        raise ApiError(400, f"{field} = {k} is more than this server allows ({served.limits.max_logprobs}).",
                       param=field, code="invalid_value")


def _check_max_tokens(served: Served, max_tokens: int, field: str) -> None:
    if max_tokens > served.limits.max_tokens:
        raise ApiError(400, f"{field} = {max_tokens} is more than this server allows ({served.limits.max_tokens}).",
                       param=field, code="invalid_value")


def _check_length(served: Served, prompt_tokens: int, max_tokens: int, prompt_field: str, tokens_field: str) -> None:
    limit, window = served.limits.max_prompt_tokens, served.context_window
    if limit is not None and prompt_tokens > limit:
        raise ApiError(400, f"The prompt has {prompt_tokens} tokens, more than this server allows ({limit}).",
                       param=prompt_field, code="context_length_exceeded")
    if window is not None and prompt_tokens + max_tokens > window:
        too_long = prompt_tokens >= window
        raise ApiError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                       f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the "
                       f"completion). Please reduce the {'prompt' if too_long else tokens_field}.",
                       param=prompt_field if too_long else tokens_field, code="context_length_exceeded")


def _params(served: Served, temperature: float | None, top_p: float | None, max_tokens: int, stop: tuple[str, ...],
            logprobs: int | None) -> SamplingParams:
    return SamplingParams(temperature=served.exposure.temperature(1.0 if temperature is None else temperature),
                          top_p=1.0 if top_p is None else top_p, max_new_tokens=max_tokens, stop=stop,
                          logprobs=logprobs)


def _rows(prompts: list[list[int]], n: int, params: SamplingParams, seed: int | None) -> list[GenRequest]:
    base = secrets.randbits(63) if seed is None else seed
    return [GenRequest(prompt_ids=ids, params=params, key=(base, p * n + j))
            for p, ids in enumerate(prompts) for j in range(n)]
