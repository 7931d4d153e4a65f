"""`distill serve` against the official `openai` client, on loopback, with the tiny teacher: answers shaped like
OpenAI's whose numbers are the model's own (greedy text = plain generation, log-probs = its log-softmax to 1e-4),
streams that add up to the plain answer, seeds that give the same text alone or in a batch, concurrent requests
really batched, and every bad request refused with a 4xx naming its field — never a 5xx, never a traceback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import uvicorn

from conftest import run_cli
from distill.eval.generation import generate as plain_generate
from distill.generation.engine import Engine
from distill.serving import ServeConfig, ServeError, ServeLimits, read_api_key
from distill.serving.app import create_app
from distill.serving.config import is_loopback
from distill.serving.launch import bind, build_service, load_model
from distill.serving.service import Service
from distill.teachers.api.logprobs import TokenMap, chosen_ids, parse_logprobs, to_topk_signal

KEY = "sk-serve-TEST-KEY-4b1d9e77"  # distinctive: grep-able in any output
NAME = "tiny"
PROMPT = "Once upon a time, a little cat"
LIMITS = ServeLimits(max_tokens=64, max_n=4, max_choices=6, max_logprobs=5, max_body_bytes=64 * 1024)


def identity_defense(input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """A logits processor that changes nothing: the seam for defenses, listed in /v1/models."""
    return logits


@contextmanager
def running(service: Service) -> Iterator[str]:
    """The app under uvicorn on 127.0.0.1 (a free port) in a background thread, stopped on exit."""
    listening = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening.sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield listening.url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        service.close()
        listening.sock.close()


@pytest.fixture(scope="module")
def tiny(tiny_teacher_dir: Path) -> tuple[Any, Any]:
    return load_model(str(tiny_teacher_dir), device="cpu")


@pytest.fixture(scope="module")
def server(tiny) -> Iterator[tuple[str, Service]]:
    """The server most tests share: an API key, small limits, a 30 ms batch window, one (identity) defense."""
    model, tokenizer = tiny
    config = ServeConfig(NAME, LIMITS, max_batch_size=16, batch_window_s=0.03, api_key=KEY)
    service = build_service(model, tokenizer, config, [identity_defense])
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            patch.delenv(name, raising=False)
        with running(service) as url:
            yield url, service


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def post(url: str, path: str, body: Any, key: str | None = KEY, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={**headers, "content-type": "application/json"},
                      timeout=60, **kwargs)


def log_softmax_rows(model: Any, tokenizer: Any, ids: list[int]) -> torch.Tensor:
    """The model's own log-softmax predicting tokens 1 … n − 1 of `ids`: rows (n − 1, V), the output's padding rows
    (ids past the tokenizer, no token) excluded as the engine excludes them."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logits[:, len(tokenizer):] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


MESSAGES = [{"role": "user", "content": "Tell me a story about a cat."}]


# ------------------------------------------------------------------------------------------------ answers
def test_models_lists_the_served_name_its_context_and_the_active_defenses(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [NAME]
    entry = models.data[0].model_dump()
    assert entry["object"] == "model" and entry["owned_by"] == "distill"
    assert entry["max_model_len"] == 512 and entry["logits_processors"] == ["identity_defense"]
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}  # open: no key needed


def test_greedy_chat_is_the_models_plain_greedy_generation(client, tiny):
    model, tokenizer = tiny
    answer = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=20, temperature=0)
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    expected = plain_generate(model, tokenizer, [prompt], max_new_tokens=20, progress=False,
                              add_special_tokens=False)
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion" and answer.model == NAME
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.texts[0]
    assert choice.finish_reason == ("stop" if expected.stopped[0] else "length") and choice.logprobs is None
    assert answer.usage.prompt_tokens == len(chat_ids(tokenizer, MESSAGES))
    assert answer.usage.completion_tokens == expected.lengths[0]
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_greedy_completions_for_a_list_of_prompts_and_n(client, tiny):
    model, tokenizer = tiny
    prompts = [PROMPT, "The dog ran to the"]
    answer = client.completions.create(model=NAME, prompt=prompts, max_tokens=12, temperature=0, n=2)
    expected = plain_generate(model, tokenizer, prompts, max_new_tokens=12, progress=False)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert [c.text for c in answer.choices] == [expected.texts[0]] * 2 + [expected.texts[1]] * 2
    assert answer.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)


def test_echo_scoring_gives_the_models_own_log_softmax(client, tiny):
    """`echo` + `logprobs` + `max_tokens: 0`, as vLLM does it: every prompt token's log-prob given those before
    it, the first one null — for a text prompt and for a token-id prompt."""
    model, tokenizer = tiny
    ids = tokenizer(PROMPT)["input_ids"]
    logp = log_softmax_rows(model, tokenizer, ids)
    for prompt in (PROMPT, ids):
        answer = client.completions.create(model=NAME, prompt=prompt, echo=True, logprobs=3, max_tokens=0)
        choice = answer.choices[0]
        assert choice.text == PROMPT and choice.finish_reason == "length"
        lp = choice.logprobs
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert "".join(lp.tokens) == PROMPT
        assert all(PROMPT[o:].startswith(t) for o, t in zip(lp.text_offset, lp.tokens, strict=True))
        scored = torch.tensor(lp.token_logprobs[1:])
        expected = logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(scored, expected, atol=1e-4, rtol=0)
        for j, top in enumerate(lp.top_logprobs[1:]):
            values, top_ids = logp[j].topk(3)
            wanted = {tokenizer.decode([int(i)]): float(v) for i, v in zip(top_ids, values, strict=True)}
            assert set(wanted) <= set(top) and len(top) <= 4  # the top-3, and the chosen token when not among them
            assert top[lp.tokens[j + 1]] == lp.token_logprobs[j + 1]
            assert all(abs(top[t] - v) < 1e-4 for t, v in wanted.items())
        assert answer.usage.prompt_tokens == len(ids) and answer.usage.completion_tokens == 0
    # distill's own API teacher reads the answer back as the same ids and top-k
    signal = to_topk_signal(parse_logprobs(answer.model_dump()), tokenizer, k=3)
    assert torch.allclose(signal.logprobs, logp.topk(3).values, atol=1e-4)


def test_generated_log_probs_are_the_models_own_in_both_formats(client, tiny):
    model, tokenizer = tiny
    tmap = TokenMap(tokenizer)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    answer = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=10, logprobs=2, seed=3)
    positions = parse_logprobs(answer.model_dump())
    new = chosen_ids(positions, tmap)
    assert answer.choices[0].text == tokenizer.decode(new)
    logp = log_softmax_rows(model, tokenizer, prompt_ids + new)[len(prompt_ids) - 1:]
    assert torch.allclose(torch.tensor(answer.choices[0].logprobs.token_logprobs),
                          logp.gather(-1, torch.tensor(new).unsqueeze(-1)).squeeze(-1), atol=1e-4, rtol=0)

    chat = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=10, logprobs=True,
                                          top_logprobs=3, seed=3)
    content = chat.choices[0].logprobs.content
    ids = [tmap.by_bytes[bytes(c.bytes)] for c in content]
    assert "".join(c.token for c in content) == chat.choices[0].message.content
    prompt = chat_ids(tokenizer, MESSAGES)
    logp = log_softmax_rows(model, tokenizer, prompt + ids)[len(prompt) - 1:]
    for j, c in enumerate(content):
        assert abs(c.logprob - float(logp[j, ids[j]])) < 1e-4
        assert [a.logprob for a in c.top_logprobs] == pytest.approx(logp[j].topk(3).values.tolist(), abs=1e-4)
    assert to_topk_signal(parse_logprobs(chat.model_dump()), tokenizer, k=3).ids.shape == (len(ids), 3)


def test_every_token_string_maps_back_to_its_own_id():
    """A token's text is written as such only when it names that token and no other: `é` as text is a two-byte
    token here, but as a vocabulary entry it is the one-byte token 0xE9 (SmolLM2 has 54 such tokens)."""
    from distill.builtin.tokenizer import train_bpe_tokenizer
    from distill.serving.render import TokenText

    tokenizer = train_bpe_tokenizer(["café crème brûlée, déjà vu, naïve façade"] * 20, vocab_size=300)
    tt = TokenText(tokenizer)
    tmap = TokenMap(tokenizer)
    assert all(tmap.id_of(tt.text(i)) == i for i in range(len(tokenizer)) if tmap.id_bytes[i] not in tmap.ambiguous)
    two_byte = tmap.by_bytes["é".encode()]
    assert tt.text(two_byte) == "Ã©" and tt.text(tmap.by_bytes[b" vu"]) == " vu"


# ------------------------------------------------------------------------------------------------ streams
def test_a_streamed_chat_adds_up_to_the_same_seeded_answer(client, server):
    kwargs = dict(model=NAME, messages=MESSAGES, max_tokens=24, seed=11, n=2, logprobs=True, top_logprobs=2)
    whole = client.chat.completions.create(**kwargs)
    texts, logprobs, finish, roles = ["", ""], [[], []], [None, None], [None, None]
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk" and chunk.model == NAME and chunk.id == chunks[0].id
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            roles[choice.index] = roles[choice.index] or choice.delta.role
            if choice.logprobs is not None:
                logprobs[choice.index] += choice.logprobs.content
            finish[choice.index] = finish[choice.index] or choice.finish_reason
    assert texts == [c.message.content for c in whole.choices]
    assert len(chunks) > 4  # really streamed: pieces, not one lump
    assert roles == ["assistant", "assistant"] and finish == [c.finish_reason for c in whole.choices]
    assert logprobs == [c.logprobs.content for c in whole.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage

    raw = post(server[0], "/v1/chat/completions", {**kwargs, "stream": True})
    events = [line for line in raw.text.split("\n") if line]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"


def test_a_client_that_leaves_mid_stream_does_not_stop_the_server(client, server):
    """A stream abandoned after its first chunks: the server finishes or drops that job and goes on serving."""
    body = {"model": NAME, "messages": MESSAGES, "max_tokens": 48, "seed": 5, "stream": True}
    with httpx.Client(base_url=server[0], timeout=60) as http, http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status_code == 200
        for _ in zip(range(2), response.iter_lines(), strict=False):
            pass  # read two lines, then leave: the connection closes with the block
    for _ in range(3):
        answer = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, seed=5)
        assert answer.choices[0].message.content is not None
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}


def test_a_streamed_completion_with_echo_adds_up_to_the_same_answer(client):
    kwargs = dict(model=NAME, prompt=PROMPT, max_tokens=16, seed=5, echo=True, logprobs=1)
    whole = client.completions.create(**kwargs)
    text, tokens, finish = "", [], None
    for chunk in client.completions.create(**kwargs, stream=True):
        assert chunk.object == "text_completion"
        choice = chunk.choices[0]
        text += choice.text
        tokens += choice.logprobs.tokens if choice.logprobs else []
        finish = finish or choice.finish_reason
    assert text == whole.choices[0].text and text.startswith(PROMPT)
    assert tokens == whole.choices[0].logprobs.tokens and finish == whole.choices[0].finish_reason


# ------------------------------------------------------------------------------------------------ seeds, batching
def test_seeded_requests_give_the_same_text_alone_and_in_a_batch_and_bursts_are_batched(client, server):
    """Eight clients at once: fewer engine calls than requests (they were batched), and the seeded request's text
    is what it was when it ran alone."""
    service = server[1]
    ask = dict(model=NAME, prompt=PROMPT, max_tokens=16, temperature=1.0)
    alone = [client.completions.create(**ask, seed=s).choices[0].text for s in range(8)]
    assert alone[0] == client.completions.create(**ask, seed=0).choices[0].text  # reproducible
    assert len(set(alone)) > 1  # the seed matters
    before = (service.worker.stats.requests, service.worker.stats.generate_calls)
    together: list[str | None] = [None] * 8
    start = threading.Barrier(8)

    def one(i: int) -> None:
        start.wait(timeout=30)
        together[i] = client.completions.create(**ask, seed=i).choices[0].text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    requests = service.worker.stats.requests - before[0]
    calls = service.worker.stats.generate_calls - before[1]
    assert requests == 8 and calls < 8, (requests, calls)
    assert service.worker.stats.largest_batch > 1
    assert together == alone
    # choice i of n is keyed (seed, i): the first of n = 2 is the lone answer, the second another sample
    pair = [c.text for c in client.completions.create(**ask, seed=0, n=2).choices]
    assert pair[0] == alone[0] and pair[1] != pair[0]


# ------------------------------------------------------------------------------------------------ refusals
def assert_refused(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text and 'File "' not in response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def test_no_key_or_a_wrong_key_is_401_and_the_key_is_never_echoed(server, caplog):
    url = server[0]
    body = {"model": NAME, "prompt": PROMPT, "max_tokens": 1}
    for key in (None, "sk-wrong", KEY + "x", KEY[:-1]):
        error = assert_refused(post(url, "/v1/completions", body, key=key), 401, code="invalid_api_key")
        assert KEY not in json.dumps(error)
    assert assert_refused(httpx.get(url + "/v1/models"), 401)
    assert httpx.post(url + "/v1/completions", json=body, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert post(url, "/v1/completions", body).status_code == 200
    assert KEY not in caplog.text


def test_an_oversized_body_is_413_declared_or_chunked(server, client):
    url = server[0]
    big = {"model": NAME, "prompt": "x" * (LIMITS.max_body_bytes + 1)}
    assert_refused(post(url, "/v1/completions", big), 413, code="request_too_large")
    data = json.dumps(big).encode()
    chunked = httpx.post(url + "/v1/completions", content=iter([data[:1000], data[1000:]]),
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=60)  # no Content-Length
    assert "content-length" not in chunked.request.headers
    assert_refused(chunked, 413)
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model=NAME, prompt="x" * (LIMITS.max_body_bytes + 1))
    assert info.value.status_code == 413


LONG = "a cat " * 400  # more tokens than the tiny model's 512 positions


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": LIMITS.max_tokens + 1}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "n": LIMITS.max_n + 1}, "n"),
    ("/v1/completions", {"prompt": [PROMPT] * 3, "n": 3}, "prompt"),  # 9 choices > max_choices 6
    ("/v1/completions", {"prompt": PROMPT, "logprobs": LIMITS.max_logprobs + 1}, "logprobs"),
    ("/v1/completions", {"prompt": LONG}, "prompt"),
    ("/v1/completions", {"prompt": "a cat " * 230, "max_tokens": 64}, "max_tokens"),  # prompt + max_tokens > 512
    ("/v1/completions", {"prompt": [1, 2, 100000]}, "prompt"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": 2.5}, "temperature"),
    ("/v1/completions", {"prompt": PROMPT, "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": "5"}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "stop": ["a"] * 17}, "stop"),
    ("/v1/completions", {"prompt": PROMPT, "max_token": 5}, "max_token"),
    ("/v1/completions", {"prompt": PROMPT, "frequency_penalty": 1.0}, "frequency_penalty"),
    ("/v1/completions", {"max_tokens": 5}, "prompt"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": LIMITS.max_tokens + 1}, "max_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 10**6}, "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": MESSAGES, "n": 99}, "n"),
    ("/v1/chat/completions", {"messages": MESSAGES, "logprobs": True, "top_logprobs": 6}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, "messages"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
])
def test_each_over_limit_or_invalid_field_is_a_400_naming_it(server, path, body, param):
    assert_refused(post(server[0], path, {"model": NAME, **body}), 400, param=param)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b'"a string"'])
def test_malformed_json_is_400(server, raw):
    assert_refused(post(server[0], "/v1/chat/completions", raw), 400, code="invalid_json")


def test_unknown_model_url_or_method_is_404_or_405_in_openais_shape(server, client):
    url = server[0]
    assert_refused(post(url, "/v1/completions", {"model": "gpt-9", "prompt": PROMPT}), 404, "model",
                   "model_not_found")
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    headers = {"Authorization": f"Bearer {KEY}"}
    assert_refused(httpx.get(url + "/v1/models/gpt-9", headers=headers), 404, "model", "model_not_found")
    assert httpx.get(url + f"/v1/models/{NAME}", headers=headers).json()["id"] == NAME
    assert_refused(httpx.get(url + "/v1/embeddings", headers=headers), 404, code="unknown_url")
    assert_refused(httpx.get(url + "/v1/completions", headers=headers), 405)


# ------------------------------------------------------------------------------------------------ failures
class SlowEngine(Engine):
    def generate(self, requests, on_token=None):  # type: ignore[override]
        time.sleep(0.5)
        return super().generate(requests, on_token)


class BrokenEngine(Engine):
    def generate(self, requests, on_token=None):  # type: ignore[override]
        raise RuntimeError(f"boom in the engine {KEY}")


def test_a_request_past_its_timeout_is_504_and_a_stream_ends_with_an_error_event(tiny):
    model, tokenizer = tiny
    config = ServeConfig(NAME, ServeLimits(request_timeout_s=0.1))
    with running(Service(SlowEngine(model, tokenizer), config)) as url:
        body = {"model": NAME, "prompt": PROMPT, "max_tokens": 4}
        error = assert_refused(post(url, "/v1/completions", body, key=None), 504, code="timeout")
        assert error["type"] == "timeout_error"
        stream = post(url, "/v1/completions", {**body, "stream": True}, key=None)
        assert stream.status_code == 200
        events = [line.removeprefix("data: ") for line in stream.text.split("\n") if line]
        assert json.loads(events[-2])["error"]["code"] == "timeout" and events[-1] == "[DONE]"


def test_an_engine_failure_is_a_plain_500_and_the_server_lives_on(tiny, caplog):
    model, tokenizer = tiny
    with running(Service(BrokenEngine(model, tokenizer), ServeConfig(NAME))) as url:
        for _ in range(2):
            error = assert_refused(post(url, "/v1/completions", {"model": NAME, "prompt": PROMPT}, key=None), 500,
                                   code="internal_error")
            assert "boom" not in error["message"] and KEY not in error["message"]
        # bad input still gets its 4xx, not the engine's 500
        assert_refused(post(url, "/v1/completions", {"model": NAME, "prompt": PROMPT, "n": 0}, key=None), 400, "n")
    assert "RuntimeError" in caplog.text  # logged server-side


# ------------------------------------------------------------------------------------------------ starting
def test_beyond_loopback_needs_a_key_from_a_named_variable(monkeypatch):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert read_api_key(None, "127.0.0.1") is None
    monkeypatch.setenv("SERVE_TEST_KEY", KEY)
    assert read_api_key("SERVE_TEST_KEY", "0.0.0.0") == KEY
    monkeypatch.delenv("SERVE_TEST_KEY")
    result = run_cli("serve", "builtin:tiny-teacher", "--host", "0.0.0.0", timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--api-key-env" in result.stderr
    result = run_cli("serve", "builtin:tiny-teacher", "--host", "0.0.0.0", "--api-key-env", KEY, timeout=120)
    assert result.returncode == 2 and KEY not in result.stderr + result.stdout and "name" in result.stderr
    with pytest.raises(ServeError, match=r"\$SERVE_TEST_KEY is not set"):
        read_api_key("SERVE_TEST_KEY", "127.0.0.1")
