"""A small OpenAI-compatible scoring server for tests/test_harvest.py: it answers echo-scoring requests
(`/v1/completions` with `echo`, `logprobs: N`, `max_tokens: 0`) with the tiny teacher's true log-probs, in the legacy
completions shape vLLM returns (tokens, token_logprobs, top_logprobs as {token: logprob}, text_offset; the first
token's logprob and alternatives null; the chosen token added to a position's alternatives when it is not among the
top N). It counts and records the prompts it scores, and can be told to misbehave."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

MODEL = "tiny"


class ScoringServer:
    """`key`: the API key it demands (401 otherwise, echoing what it got, as careless servers do). `max_logprobs`:
    more is refused with a 400 like vLLM's. `split_chars`: tokenize prompts into single characters — a teacher whose
    tokenizer is not ours. `delay_s`: answer this late (to give a test time to kill a harvest)."""

    def __init__(self, teacher_dir: Path, key: str | None = None, max_logprobs: int = 20, split_chars: bool = False,
                 delay_s: float = 0.0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        self.model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
        self.key, self.max_logprobs, self.split_chars, self.delay_s = key, max_logprobs, split_chars, delay_s
        self.prompts: Counter[str] = Counter()  # json of each scored prompt → times
        self.lock = threading.Lock()
        self._forward = threading.Lock()
        self._names = [self._name(i) for i in range(len(self.tokenizer))]

    @property
    def requests(self) -> int:
        with self.lock:
            return sum(self.prompts.values())

    def _name(self, i: int) -> str:
        """A token as vLLM writes it (its text), or as our vocabulary does where the text is a broken character."""
        text = self.tokenizer.decode([i])
        return self.tokenizer.convert_ids_to_tokens(i) if "\ufffd" in text else text

    def answer(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        n = payload.get("logprobs") or 0
        if n > self.max_logprobs:
            return 400, {"error": {"message": f"Requested logprobs of {n}, which is greater than max allowed: "
                                              f"{self.max_logprobs}", "type": "BadRequestError"}}
        prompt = payload["prompt"]
        if self.split_chars:
            tokens = list(prompt) if isinstance(prompt, str) else [self._names[i] for i in prompt]
            lp = -1.0
            return 200, _completion([*tokens], [None] + [lp] * (len(tokens) - 1),
                                    [None] + [{t: lp} for t in tokens[1:]])
        ids = self.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
        with self._forward, torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0, :-1, :len(self.tokenizer)].float()
        logp = torch.log_softmax(logits, dim=-1)
        top, top_ids = logp.topk(n, dim=-1)
        tops: list[dict[str, float] | None] = [None]
        for j in range(1, len(ids)):
            row = {self._names[int(i)]: float(v) for i, v in zip(top_ids[j - 1], top[j - 1], strict=True)}
            row.setdefault(self._names[ids[j]], float(logp[j - 1, ids[j]]))  # vLLM's extra chosen entry
            tops.append(row)
        chosen = [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
        with self.lock:
            self.prompts[json.dumps(prompt)] += 1
        return 200, _completion([self._names[i] for i in ids], chosen, tops)

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port; yields the base URL; stops (and joins) on exit."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _completion(tokens: list[str], chosen: list[float | None], tops: list[dict[str, float] | None]) -> dict:
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "length", "logprobs": {
                "tokens": tokens, "token_logprobs": chosen, "top_logprobs": tops, "text_offset": offsets}}]}


def _handler(server: ScoringServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall each

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            got = self.headers.get("authorization", "")
            if server.key is None or got == f"Bearer {server.key}":
                return True
            self._send(401, {"error": {"message": f"invalid key: {got}"}})
            return False

        def do_GET(self) -> None:
            if self._authorised():
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests",
                                                             "created": int(time.time()), "root": "tiny-teacher"}]})

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            if not self._authorised():
                return
            if server.delay_s:
                time.sleep(server.delay_s)
            status, body = server.answer(payload)
            self._send(status, body)

    return Handler
