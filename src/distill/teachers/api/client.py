"""`ApiClient`: JSON POSTs to an OpenAI-compatible server (`/v1/completions`, `/v1/chat/completions`), robust enough
for long generation and harvest jobs. Documented in docs/api.md ("API teachers: the client").

- Transient failures — HTTP 408, 429, 500, 502, 503, 504, a timeout, a refused or dropped connection — are retried
  up to `max_retries` times, waiting what the server's `Retry-After` asks, else exponential backoff with full jitter
  (`pacing.py`); then one `TeacherApiError` says what failed, where, how often, and what to do.
- Other answers (400, 401, 403, 404, 422, …, or a body that is not a JSON object) fail at once, in one line.
- At most `max_concurrency` requests are in flight over all threads, and request starts keep the client-side rate
  limit (`requests_per_minute`, retries included).
- The API key is read from the environment variable `api_key_env` names, once, here; it is sent only as
  `Authorization: Bearer …` and is scrubbed from every message and log line this module writes (a server that
  echoes it back included).

Synchronous by design: one `httpx.Client` (its connection pool is thread-safe) shared by a thread pool. The jobs
that use it (generate, harvest) are synchronous loops that write a journal as answers come, the waits are plain
`sleep` calls a test can replace, and Ctrl-C needs no event loop to unwind; at ≤ a few dozen requests in flight,
threads cost nothing next to the requests themselves.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import httpx

from distill.errors import DistillError
from distill.recipe.api import ApiConfig
from distill.teachers.api.messages import FIELD, GIVING_UP_HINTS, SERVER_TROUBLE, refusal, server_message
from distill.teachers.api.pacing import RateLimiter, parse_retry_after, retry_wait

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class TeacherApiError(DistillError):
    """An OpenAI-compatible teacher endpoint could not be used: the key is missing or refused, the request was refused,
    or the server kept failing after every retry. Exit code 2, like every problem the user can fix."""


@dataclass(frozen=True)
class _Failure:
    """One failed attempt that is worth retrying."""

    kind: str | int  # "timeout", "connection", or the HTTP status
    what: str  # for the message: `HTTP 503, server said: "…"`, `no answer within teacher.api.timeout_s = 60 s`, …
    retry_after: float | None = None


class _Cancelled(Exception):
    """A `map` was abandoned (an error elsewhere, the caller stopped reading): later attempts are not made."""


class ApiClient:
    """A client for one endpoint and model. `post` sends one request; `map` many, up to `max_concurrency` at once.

    `sleep`, `clock` (monotonic, for the rate limit), `wall_clock` (Unix time, for `Retry-After` dates), `rng` (the
    jitter), `environ` (where the key is read) and `transport` (httpx's) are for tests."""

    def __init__(self, config: ApiConfig, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, environ: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.config = config
        self._root = config.base_url.rstrip("/")
        self._key = _read_key(config.api_key_env, os.environ if environ is None else environ, self._root)
        self._headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._sleep, self._wall_clock = sleep, wall_clock
        self._rng, self._rng_lock = rng or random.Random(), threading.Lock()
        self._limiter = RateLimiter(config.requests_per_minute, clock=clock, sleep=sleep)
        self._in_flight = threading.BoundedSemaphore(config.max_concurrency)
        limits = httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency)
        self._http = httpx.Client(timeout=config.timeout_s, limits=limits, transport=transport)

    def __repr__(self) -> str:
        key = f"${self.config.api_key_env}" if self.config.api_key_env else None
        return f"ApiClient(base_url={self._root!r}, model={self.config.model!r}, key={key})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST `payload` as JSON to `path` (`/v1/completions`, `/v1/chat/completions`) and return the answer's JSON
        object, retrying transient failures; raises `TeacherApiError`."""
        return self._post(path, payload, None)

    def get_once(self, path: str) -> dict[str, Any] | None:
        """One GET, without retries, for what is nice to have (`/v1/models`): the answer's JSON object, or None when
        there is none — a failure is logged (the key scrubbed), never raised."""
        try:
            response = self._http.get(self._url(path), headers=self._headers)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.info(self._redact(f"GET {path} failed ({type(exc).__name__}: {exc})"))
            return None
        return body if isinstance(body, dict) else None

    def map(self, path: str, payloads: Iterable[Mapping[str, Any]], *,
            progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """`post` every payload, up to `max_concurrency` at once; the answers in the payloads' order. `progress(done,
        total)` is called in the caller's thread after each answer. The first request that fails for good stops the
        rest and raises its `TeacherApiError`, naming which request it was."""
        payloads = list(payloads)
        results: list[dict[str, Any]] = [{}] * len(payloads)
        for done, (index, result) in enumerate(self.map_unordered(path, payloads), start=1):
            results[index] = result
            if progress is not None:
                progress(done, len(payloads))
        return results

    def map_unordered(self, path: str, payloads: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Like `map`, but yields `(index, answer)` as each answer comes, for jobs that journal answers one by one.
        Stopping the iteration early stops the requests not yet started."""
        payloads = list(payloads)
        if not payloads:
            return
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(payloads)),
                                  thread_name_prefix="distill-api")
        try:
            futures = {pool.submit(self._post, path, payload, cancel): i for i, payload in enumerate(payloads)}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    result = future.result()
                except TeacherApiError as exc:
                    raise TeacherApiError(f"request {index + 1} of {len(payloads)}: {exc}") from None
                yield index, result
        finally:
            cancel.set()  # attempts in flight finish; no new ones start, queued requests are dropped
            pool.shutdown(wait=False, cancel_futures=True)

    def _post(self, path: str, payload: Mapping[str, Any], cancel: threading.Event | None) -> dict[str, Any]:
        url = self._url(path)
        where = f"POST {url.split('?', 1)[0]}"
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            with self._in_flight:  # then the rate limit's slot, so that a start is never later than its slot
                self._limiter.acquire()
                outcome = self._attempt(url, payload, where)
            if not isinstance(outcome, _Failure):
                return outcome
            if attempt == attempts:
                break
            with self._rng_lock:
                wait = retry_wait(attempt, outcome.retry_after, self._rng)
            log.info(self._redact(f"{where}: {outcome.what}; retry {attempt} of {self.config.max_retries} in "
                                  f"{wait:.1f} s"))
            self._sleep(wait)
        hint = GIVING_UP_HINTS.get(outcome.kind, SERVER_TROUBLE)
        retries = self.config.max_retries
        raise self._error(f"{where} failed {attempts} time{'s' * (attempts > 1)} ({retries} "
                          f"retr{'y' if retries == 1 else 'ies'}; last: {outcome.what}); {hint}")

    def _attempt(self, url: str, payload: Mapping[str, Any], where: str) -> dict[str, Any] | _Failure:
        """One request: the answer's JSON object, a `_Failure` worth retrying, or a `TeacherApiError` raised."""
        try:
            response = self._http.post(url, json=payload, headers=self._headers)
        except httpx.TimeoutException:
            return _Failure("timeout", f"no answer within {FIELD}timeout_s = {self.config.timeout_s:g} s")
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            return _Failure("connection", f"connection failed ({type(exc).__name__}: {exc})")
        except httpx.HTTPError as exc:
            raise self._error(f"{where} failed ({type(exc).__name__}: {exc}); check {FIELD}base_url") from None
        status = response.status_code
        if 200 <= status < 300:
            return self._json_object(response, where)
        said = server_message(response)
        if status in RETRY_STATUSES:
            return _Failure(status, f"HTTP {status}{said}", parse_retry_after(response.headers, self._wall_clock()))
        raise self._error(refusal(response, said, where, self.config))

    def _json_object(self, response: httpx.Response, where: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content-type")
            raise self._error(f"{where} answered HTTP {response.status_code} with a body that is not JSON ({kind}, "
                              f"{len(response.content)} bytes); check that {FIELD}base_url is an OpenAI-compatible "
                              "server") from None
        if not isinstance(body, dict):
            raise self._error(f"{where} answered HTTP {response.status_code} with a JSON {type(body).__name__}, not "
                              f"an object; check that {FIELD}base_url is an OpenAI-compatible server")
        return body

    def _url(self, path: str) -> str:
        assert path.startswith("/"), path
        if self._root.endswith("/v1") and path.startswith("/v1/"):  # base_url written the openai client's way
            path = path[len("/v1"):]
        return self._root + path

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _error(self, message: str) -> TeacherApiError:
        return TeacherApiError(self._redact(message))


def _read_key(env: str | None, environ: Mapping[str, str], root: str) -> str | None:
    if env is None:
        return None
    key = environ.get(env, "").strip()
    if not key:
        raise TeacherApiError(f"set ${env} to the API key for {root} ({FIELD}api_key_env names that variable), or "
                              f"set {FIELD}api_key_env to null for a server that needs no key")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise TeacherApiError(f"${env} holds characters an HTTP header cannot carry (spaces, control or non-ASCII "
                              "characters); check its value")
    return key
