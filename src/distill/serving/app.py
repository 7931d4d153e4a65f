"""The HTTP layer: routes, the API key, the body-size limit, and errors shaped like OpenAI's.

Every answer that is not a success is `{"error": {"message", "type", "param", "code"}}` — what OpenAI's clients
parse — and bad input is always a 4xx: the routes read the raw body and validate it themselves (protocol.py), so no
framework default (FastAPI's 422 `detail` list, Starlette's plain-text 404) ever reaches a client. An unexpected
failure is a 500 with a fixed message; its traceback goes to the server's log only, never into a response.

The key is compared with `hmac.compare_digest` (no timing hint), is checked before the body is read, and is never
echoed or logged. /health stays open, as vLLM's does, for load balancers; it says nothing but whether the engine runs.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distill.serving.protocol import ApiError, ChatRequest, CompletionRequest, parse_body
from distill.serving.service import Service

log = logging.getLogger("distill.serve")


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="distill serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(Guard, api_key=service.config.api_key,  # type: ignore[arg-type]
                       max_body_bytes=service.config.limits.max_body_bytes)

    @app.get("/health")
    async def health() -> Response:
        ok = service.healthy()
        return JSONResponse({"status": "ok" if ok else "engine stopped"}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        found = [m for m in service.models()["data"] if m["id"] == model]
        if not found:
            raise ApiError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
        return found[0]

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = parse_body(await request.body(), CompletionRequest)
        return _respond(await service.completions(req))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        req = parse_body(await request.body(), ChatRequest)
        return _respond(await service.chat(req))

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(ApiError(404, f"Unknown request URL: {request.method} {request.url.path}. This "
                                           "server has /v1/models, /v1/completions, /v1/chat/completions and /health.",
                                           code="unknown_url"))
        if exc.status_code == 405:
            return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}.",
                                           code="method_not_allowed"))
        return error_response(ApiError(exc.status_code, str(exc.detail), kind="invalid_request_error"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(ApiError(400, "The request is not valid.", code="invalid_value"))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
        return error_response(ApiError(500, "The server failed on this request; the error has been logged.",
                                       code="internal_error", kind="server_error"))

    return app


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _respond(answer: Any) -> Response:
    if isinstance(answer, dict):
        return JSONResponse(answer)
    return StreamingResponse(answer, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class Guard:
    """ASGI middleware in front of everything: the API key on every path but /health (before the body is read; a
    route added later is closed by default), then the body
    size, by its declared Content-Length and by what actually arrives (a chunked upload declares none)."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self._key = api_key.encode() if api_key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self._key is not None and scope["path"] != "/health":
            refusal = self._check_key(headers.get(b"authorization", b""))
            if refusal is not None:
                await _send_error(send, refusal)
                return
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            await _send_error(send, ApiError(400, "The Content-Length header is not a number.", code="invalid_value"))
            return
        if int(declared) > self.max_body_bytes:
            await _send_error(send, self._too_large())
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()  # inside the route's body read: the app's ApiError handler answers
            return message

        await self.app(scope, counted, send)

    def _check_key(self, header: bytes) -> ApiError | None:
        assert self._key is not None
        scheme, _, given = header.partition(b" ")
        if not header:
            return ApiError(401, "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
                            code="invalid_api_key")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._key):
            return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def _too_large(self) -> ApiError:
        return ApiError(413, f"The request body is larger than this server accepts ({self.max_body_bytes:,} bytes).",
                        code="request_too_large")


async def _send_error(send: Send, exc: ApiError) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
