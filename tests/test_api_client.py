"""The API teachers' HTTP client against a real, scripted server on loopback: it retries what is transient (honouring
`Retry-After`, backing off with jitter otherwise), refuses the rest in one line, keeps the concurrency and rate
limits, and never lets the key out. Waits go through an injected sleep, so nothing here waits for real except the
timeout test (two 0.2 s timeouts)."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from distill.errors import DistillError
from distill.recipe.api import ApiConfig
from distill.teachers.api import ApiClient, RateLimiter, TeacherApiError
from distill.teachers.api.pacing import MAX_WAIT_S, backoff_delay, parse_retry_after

KEY_ENV = "DISTILL_TEST_API_KEY"
KEY = "sk-distill-SECRET-7f3a9c1e5b"  # distinctive: grep-able in any output


# ------------------------------------------------------------------------------------------------ the test server


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict or list: sent as JSON; a str: sent as it is; None: the request's JSON echoed
    headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0  # answer this late (the server stops waiting when the test ends)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    payload: Any


class Script:
    """What the server answers (`respond(seen) -> Reply`, settable per test) and what it saw."""

    def __init__(self) -> None:
        self.respond: Callable[[Seen], Reply] = lambda seen: Reply()
        self.seen: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self.changed = threading.Condition()
        self.stop = threading.Event()

    def answers(self, *replies: Reply) -> None:
        """Answer with these replies in order, the last one again and again."""
        queue = list(replies)
        self.respond = lambda seen: queue.pop(0) if len(queue) > 1 else queue[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def do_POST(self) -> None:
        script: Script = self.server.script  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body or b"null"))
        with script.changed:
            script.seen.append(seen)
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
            script.changed.notify_all()
        try:
            reply = script.respond(seen)
            if reply.hold_s:
                script.stop.wait(reply.hold_s)
        finally:
            with script.changed:  # counted out before answering, so the count never runs ahead of the client's
                script.in_flight -= 1
        body = reply.body if reply.body is not None else seen.payload
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        try:
            self.send_response(reply.status)
            for name, value in {"content-type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    def log_message(self, *args: Any) -> None:
        pass

    do_GET = do_POST  # the same script answers GET /v1/models


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # 40 connections at once in the map test

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeout tests) is expected here


@pytest.fixture()
def server() -> Iterator[tuple[str, Script]]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.script = Script()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.script  # type: ignore[attr-defined]
    finally:
        httpd.script.stop.set()  # type: ignore[attr-defined]
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _key_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class FakeTime:
    """A clock that moves only when something sleeps; every sleep is recorded."""

    def __init__(self, now: float = 0.0) -> None:
        self.now, self.sleeps, self._lock = now, [], threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def make_client(url: str, time: FakeTime | None = None, seed: int = 0, **settings: Any) -> ApiClient:
    time = time or FakeTime()
    config = ApiConfig(base_url=url, model="teacher", **{"api_key_env": KEY_ENV, **settings})
    return ApiClient(config, sleep=time.sleep, clock=time.clock, wall_clock=lambda: 1_700_000_000.0,
                     rng=random.Random(seed))


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def openai_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "code": None}}


# ------------------------------------------------------------------------------------------------ retries


def test_429_with_retry_after_then_503_twice_then_200_succeeds_after_the_waits_asked(server):
    url, script = server
    script.answers(Reply(429, openai_error("slow down"), {"Retry-After": "2"}), Reply(503), Reply(503),
                   Reply(200, {"choices": [{"text": "hi"}]}))
    time = FakeTime()
    with make_client(url, time, seed=0) as client:
        answer = client.post("/v1/completions", {"model": "teacher", "prompt": "x"})
    assert answer == {"choices": [{"text": "hi"}]}
    assert len(script.seen) == 4
    assert all(s.path == "/v1/completions" and s.payload == {"model": "teacher", "prompt": "x"} for s in script.seen)
    assert all(s.headers["authorization"] == f"Bearer {KEY}" for s in script.seen)
    jitter = random.Random(0)  # Retry-After draws no jitter; retries 2 and 3 draw in [0, 2) and [0, 4)
    assert time.sleeps == [2.0, jitter.uniform(0, 2), jitter.uniform(0, 4)]
    assert 0 < time.sleeps[1] < 2 and 0 < time.sleeps[2] < 4


def test_a_retry_after_date_is_honoured_and_a_long_wait_capped(server):
    url, script = server
    in_five_seconds = email.utils.formatdate(1_700_000_005, usegmt=True)  # the client's wall clock: 1_700_000_000
    script.answers(Reply(503, headers={"Retry-After": in_five_seconds}), Reply(429, headers={"Retry-After": "3600"}),
                   Reply(200, {"ok": True}))
    time = FakeTime()
    with make_client(url, time) as client:
        assert client.post("/v1/chat/completions", {"messages": []}) == {"ok": True}
    assert time.sleeps == [5.0, MAX_WAIT_S]


def test_always_503_gives_up_after_max_retries_plus_one_attempts_with_a_clear_message(server):
    url, script = server
    script.answers(Reply(503, openai_error("the engine is  overloaded\n")))
    time = FakeTime()
    with make_client(url, time, max_retries=3) as client, pytest.raises(TeacherApiError) as info:
        client.post("/v1/completions?trace=1", {"prompt": "x"})
    message = one_line(info)
    assert len(script.seen) == 4 and len(time.sleeps) == 3
    assert (f"POST {url}/v1/completions failed 4 times (3 retries; last: HTTP 503, server said: "
            '"the engine is overloaded"); the server is failing') in message
    assert "trace=1" not in message and "max_retries" in message
    assert isinstance(info.value, DistillError) and info.value.exit_code == 2
    # the backoff grows: each wait within its doubling ceiling
    assert all(0 <= wait <= 2 ** i for i, wait in enumerate(time.sleeps))


def test_the_backoff_ceiling_doubles_up_to_the_cap():
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [backoff_delay(n, Top()) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": " 1.5 "}, 1.5),
    ({"retry-after": email.utils.formatdate(1_000_007, usegmt=True)}, 7.0),
    ({"retry-after": email.utils.formatdate(999_990, usegmt=True)}, 0.0),  # a date gone by: retry now
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # OpenAI's, the more precise
    ({"retry-after": "soon"}, None),
    ({"retry-after": "nan"}, None),
    ({}, None),
])
def test_retry_after_is_read_as_seconds_or_a_date(headers, expected):
    assert parse_retry_after(headers, now=1_000_000.0) == expected


def test_a_timeout_is_retried_then_reported(server):
    url, script = server
    script.answers(Reply(200, {"late": True}, hold_s=2.0))
    time = FakeTime()
    with make_client(url, time, timeout_s=0.2, max_retries=1) as client, pytest.raises(TeacherApiError) as info:
        client.post("/v1/completions", {"prompt": "x"})
    message = one_line(info)
    assert len(script.seen) == 2 and len(time.sleeps) == 1
    assert ("failed 2 times (1 retry; last: no answer within teacher.api.timeout_s = 0.2 s); "
            "raise teacher.api.timeout_s") in message


def test_a_refused_connection_is_retried_then_reported():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    time = FakeTime()
    with make_client(f"http://127.0.0.1:{port}", time, max_retries=2) as client, \
            pytest.raises(TeacherApiError) as info:
        client.post("/v1/completions", {"prompt": "x"})
    message = one_line(info)
    assert len(time.sleeps) == 2
    assert "failed 3 times (2 retries; last: connection failed (ConnectError" in message
    assert "check that the server is running" in message


# ------------------------------------------------------------------------------------------------ refusals


def test_401_is_not_retried_and_names_the_variable_holding_the_refused_key(server):
    url, script = server
    script.answers(Reply(401, openai_error("Incorrect API key provided")))
    time = FakeTime()
    with make_client(url, time) as client, pytest.raises(TeacherApiError) as info:
        client.post("/v1/completions", {"prompt": "x"})
    assert len(script.seen) == 1 and time.sleeps == []
    assert one_line(info).startswith(f"the key in ${KEY_ENV} was refused (POST {url}/v1/completions answered HTTP "
                                     '401, server said: "Incorrect API key provided")')


@pytest.mark.parametrize(("status", "body", "says"), [
    (400, openai_error("max_tokens is too large"), 'HTTP 400, server said: "max_tokens is too large"'),
    (404, {"detail": "Not Found"}, "check teacher.api.base_url and teacher.api.model ('teacher')"),
    (422, {"message": "temperature must be >= 0"}, 'HTTP 422, server said: "temperature must be >= 0"'),
    (413, "<html>too big</html>", "HTTP 413: the request is too large"),
    (307, {}, "the server redirects to"),
])
def test_other_client_errors_are_not_retried(server, status, body, says):
    url, script = server
    script.answers(Reply(status, body))
    time = FakeTime()
    with make_client(url, time) as client, pytest.raises(TeacherApiError) as info:
        client.post("/v1/chat/completions", {"messages": []})
    assert len(script.seen) == 1 and time.sleeps == []
    assert says in one_line(info)


def test_a_key_missing_from_the_environment_or_wanted_by_the_server(server, monkeypatch):
    url, script = server
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(TeacherApiError, match=rf"^set \${KEY_ENV} to the API key for {url} "):
        make_client(url)
    script.answers(Reply(401, openai_error("no key")))
    with make_client(url, api_key_env=None) as client, pytest.raises(TeacherApiError) as info:
        client.post("/v1/completions", {})
    assert "the server wants an API key; put it in an environment variable" in one_line(info)
    assert "authorization" not in script.seen[0].headers


def test_a_body_that_is_not_a_json_object_is_refused(server):
    url, script = server
    script.answers(Reply(200, "<html>a login page</html>", {"content-type": "text/html"}), Reply(200, [1, 2]))
    with make_client(url) as client:
        with pytest.raises(TeacherApiError, match="answered HTTP 200 with a body that is not JSON"):
            client.post("/v1/completions", {})
        with pytest.raises(TeacherApiError, match="answered HTTP 200 with a JSON list, not an object"):
            client.post("/v1/completions", {})
    assert len(script.seen) == 2


def test_a_base_url_ending_in_v1_as_the_openai_client_writes_it(server):
    url, script = server
    script.answers(Reply(), Reply(404))
    with make_client(url + "/v1/") as client:
        client.post("/v1/chat/completions", {"n": 1})
        with pytest.raises(TeacherApiError, match=f"^POST {url}/v1/chat/completions answered HTTP 404"):
            client.post("/v1/chat/completions", {"n": 1})
    assert [seen.path for seen in script.seen] == ["/v1/chat/completions"] * 2


# ------------------------------------------------------------------------------------------------ concurrency, rate


def test_map_keeps_the_order_and_at_most_max_concurrency_requests_in_flight(server):
    url, script = server

    def respond(seen: Seen) -> Reply:
        with script.changed:  # hold every request until 8 were in flight together once: concurrency is really used
            script.changed.wait_for(lambda: script.max_in_flight >= 8, timeout=2.0)
        script.stop.wait(0.01)
        return Reply(200, {"echo": seen.payload["i"]})

    script.respond = respond
    progress: list[tuple[int, int]] = []
    with make_client(url, max_concurrency=8) as client:
        answers = client.map("/v1/completions", [{"i": i} for i in range(40)],
                             progress=lambda done, total: progress.append((done, total)))
    assert answers == [{"echo": i} for i in range(40)]
    assert script.max_in_flight == 8
    assert progress == [(done, 40) for done in range(1, 41)]


def test_posts_from_the_callers_own_threads_keep_the_concurrency_bound_too(server):
    url, script = server
    script.respond = lambda seen: Reply(hold_s=0.02)
    with make_client(url, max_concurrency=3) as client:
        threads = [threading.Thread(target=client.post, args=("/v1/completions", {"i": i})) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert len(script.seen) == 12 and script.max_in_flight <= 3


def test_map_stops_at_the_first_request_that_fails_for_good_and_names_it(server):
    url, script = server
    script.respond = lambda seen: Reply(400, openai_error("bad prompt")) if seen.payload["i"] == 3 else Reply()
    with make_client(url, max_concurrency=1) as client, pytest.raises(TeacherApiError) as info:
        client.map("/v1/completions", [{"i": i} for i in range(10)])
    assert one_line(info).startswith("request 4 of 10: POST ")
    assert 4 <= len(script.seen) <= 5  # one at a time: at most the request already taken up after the failure


def test_map_stops_retrying_the_other_requests_once_one_failed(server):
    url, script = server
    script.respond = lambda seen: Reply(400) if seen.payload["i"] == 1 else Reply(503)
    config = ApiConfig(base_url=url, model="m", max_concurrency=2, max_retries=30)
    with ApiClient(config, sleep=lambda s: script.stop.wait(0.01)) as client:
        with pytest.raises(TeacherApiError, match=r"^request 2 of 2: "):
            client.map("/v1/completions", [{"i": 0}, {"i": 1}])
        script.stop.wait(0.2)  # room for ~20 more retries of request 0, were they still made
        assert sum(seen.payload["i"] == 0 for seen in script.seen) <= 3


def test_the_rate_limit_spaces_request_starts_on_a_fake_clock():
    time = FakeTime()
    limiter = RateLimiter(120, clock=time.clock, sleep=time.sleep)  # one start every 0.5 s
    starts = []
    for _ in range(5):
        limiter.acquire()
        starts.append(time.now)
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0]
    time.now = 100.0  # an idle spell earns no burst
    limiter.acquire()
    limiter.acquire()
    assert time.now == 100.5


def test_the_rate_limit_gives_every_thread_its_own_slot():
    frozen = FakeTime()  # the clock stands still, so each wait is exactly the slot a thread reserved
    limiter = RateLimiter(60, clock=frozen.clock, sleep=frozen.sleeps.append)

    def work() -> None:
        for _ in range(5):
            limiter.acquire()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(frozen.sleeps) == [float(n) for n in range(1, 40)]  # the first start waits not at all


def test_the_client_keeps_the_rate_limit_retries_included(server):
    url, script = server
    script.answers(Reply(503, headers={"Retry-After": "0"}), Reply())
    time = FakeTime()
    with make_client(url, time, requests_per_minute=6) as client:  # one start every 10 s
        client.post("/v1/completions", {"i": 0})
        client.post("/v1/completions", {"i": 1})
    assert len(script.seen) == 3
    assert time.sleeps == [0.0, 10.0, 10.0]  # Retry-After 0, then the limiter's waits for starts 2 and 3


# ------------------------------------------------------------------------------------------------ the key


def test_the_key_appears_in_no_message_repr_log_or_output(server, capsys, caplog):
    """Every error path, against a server that echoes the key back in its error messages."""
    url, script = server
    caplog.set_level(logging.DEBUG)  # httpx's and httpcore's own loggers included
    echo = openai_error(f"Incorrect API key provided: {KEY}")
    texts = []

    def failure(client: ApiClient, reply: Reply | None = None) -> None:
        if reply is not None:
            script.answers(reply)
        with pytest.raises(DistillError) as info:
            client.post("/v1/completions", {"prompt": "x"})
        texts.extend([str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))])

    with make_client(url, max_retries=1) as client:
        failure(client, Reply(401, echo))
        failure(client, Reply(503, echo))  # exhausted retries, with a logged retry
        failure(client, Reply(429, echo, {"Retry-After": "0"}))
        failure(client, Reply(200, f"not json {KEY}"))
        failure(client, Reply(400, {"detail": [{"msg": "bad", "input": {"authorization": f"Bearer {KEY}"}}]}))
        texts.extend([repr(client), str(client), repr(client.config), str(client.config)])
    with make_client(url, timeout_s=0.2, max_retries=1) as client:
        failure(client, Reply(200, hold_s=2.0))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with make_client(f"http://127.0.0.1:{port}", max_retries=1) as client:
        failure(client)
    with pytest.raises(ValidationError) as info:  # a key pasted where its variable's name belongs
        ApiConfig(base_url=url, model="m", api_key_env=KEY)
    texts.append(str(info.value))

    assert all(s.headers["authorization"] == f"Bearer {KEY}" for s in script.seen)  # it was sent, though
    assert len(texts) == 3 * 7 + 5
    captured = capsys.readouterr()
    logged = [record.getMessage() for record in caplog.records] + [caplog.text]
    assert any("retry 1 of 1" in line for line in logged)  # the logging did happen
    for text in [*texts, captured.out, captured.err, *logged]:
        assert KEY not in text
        assert KEY[8:20] not in text  # nor a piece of it


# ------------------------------------------------------------------------------------------------ the spec


def test_the_spec_defaults_and_refusals():
    config = ApiConfig(base_url="http://127.0.0.1:8000", model="m")
    assert (config.api_key_env, config.max_concurrency, config.requests_per_minute, config.timeout_s,
            config.max_retries) == (None, 8, None, 60.0, 5)
    for bad in ("127.0.0.1:8000", "ftp://host", "http://user:pass@host", "https://host/v1?key=abc", "http://"):
        with pytest.raises(ValidationError, match="base_url"):
            ApiConfig(base_url=bad, model="m")
    for field_name, value in [("max_concurrency", 0), ("requests_per_minute", 0), ("timeout_s", 0),
                              ("max_retries", -1), ("model", ""), ("api_key_env", "MY KEY")]:
        with pytest.raises(ValidationError, match=field_name):
            ApiConfig(**{"base_url": "http://h", "model": "m", field_name: value})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ApiConfig(base_url="http://h", model="m", api_key="sk-…")  # the key itself has no field


def test_get_once_returns_the_json_object_or_none_and_never_raises_or_leaks_the_key(server, caplog):
    url, script = server
    client = ApiClient(ApiConfig(base_url=url, model="m", api_key_env=KEY_ENV), environ={KEY_ENV: KEY})
    script.answers(Reply(200, {"object": "list", "data": [{"id": "m"}]}))
    assert client.get_once("/v1/models") == {"object": "list", "data": [{"id": "m"}]}
    assert script.seen[-1].headers.get("authorization") == f"Bearer {KEY}"
    script.answers(Reply(404, {"error": {"message": "no"}}))
    assert client.get_once("/v1/models") is None
    script.answers(Reply(200, "not json"))
    with caplog.at_level(logging.INFO):
        assert client.get_once("/v1/models") is None
    client.close()
    closed = ApiClient(ApiConfig(base_url="http://127.0.0.1:9", model="m", api_key_env=KEY_ENV), environ={KEY_ENV: KEY})
    with caplog.at_level(logging.INFO):
        assert closed.get_once("/v1/models") is None
    assert KEY not in caplog.text
