"""The server's work behind the HTTP layer: a request in, an OpenAI-shaped answer (or a stream of chunks) out.

Each request becomes one `Job` for the batch worker and is awaited on the event loop, never blocking it; streamed
pieces travel from the worker thread into the request's own asyncio queue (`call_soon_threadsafe`). A stream sends
the text as it is written and, in each choice's last chunk, its log-probs (all of them, with the finish reason):
the engine reports log-probs per row when the row ends. A client that adds up the chunks' `logprobs.content` (or
`tokens`) gets exactly the non-streamed answer's.

With defenses (`--defenses KEYFILE`), their processors run in the engine, their public view (knobs and key ids, never
a secret) is listed in /v1/models, and every log-prob goes through the exposure controls before it is rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from distill.defenses.build import Defenses
from distill.defenses.exposure import Exposure
from distill.generation.engine import Engine, GenResult, LogitsProcessor, TokenLogprob
from distill.models import context_length
from distill.serving import render
from distill.serving.config import ServeConfig
from distill.serving.prepare import Served, Work, chat_work, completion_work
from distill.serving.protocol import ApiError, ChatRequest, CompletionRequest
from distill.serving.worker import BatchWorker, Job, JobResult

log = logging.getLogger("distill.serve")


def processor_name(process: LogitsProcessor) -> str:
    """How a logits processor is listed in /v1/models: its `name` attribute, else its function or class name."""
    name = getattr(process, "name", None) or getattr(process, "__name__", None) or type(process).__name__
    return str(name)


class Service:
    def __init__(self, engine: Engine, config: ServeConfig, defenses: Defenses | None = None):
        self.engine, self.config, self.defenses = engine, config, defenses
        window = context_length(engine.model.config)
        self.exposure = defenses.exposure if defenses is not None else Exposure()
        self.served = Served(config.model_name, engine.tokenizer, engine.n_tokens, window, config.limits,
                             self.exposure)
        self.tokens = render.TokenText(engine.tokenizer)
        self.worker = BatchWorker(engine, max_batch_size=config.max_batch_size, window_s=config.batch_window_s)
        self.created = render.now()

    def close(self) -> None:
        self.worker.close()

    def models(self) -> dict[str, Any]:
        entry = {"id": self.config.model_name, "object": "model", "created": self.created, "owned_by": "distill",
                 "max_model_len": self.served.context_window,
                 "logits_processors": [processor_name(p) for p in self.engine.logits_processors]}
        if self.defenses is not None:
            entry["defenses"] = self.defenses.public_view()
        return {"object": "list", "data": [entry]}

    def healthy(self) -> bool:
        return self.worker.alive

    # ------------------------------------------------------------------------------------------------ completions
    async def completions(self, req: CompletionRequest) -> dict[str, Any] | AsyncIterator[str]:
        # tokenizing a long prompt takes a while: off the event loop, which serves every other stream
        work = await asyncio.to_thread(completion_work, self.served, req)
        generating = any(row.params.max_new_tokens > 0 for row in work.rows)
        scoring = req.echo and req.logprobs is not None
        job = Job(work.rows if generating else [], work.prompts if scoring else [], work.logprobs or 0)

        def choices(done: JobResult) -> list[dict[str, Any]]:
            out = []
            for i, result in enumerate(_results(done, work)):
                p = i // work.n
                echo_ids = work.prompts[p] if req.echo else []
                text = (work.texts[p] if req.echo else "") + result.text
                logprobs = None
                if req.logprobs is not None:
                    echoed = self.exposure.report([], echo_ids, done.scores[p]) if scoring else []
                    generated = self.exposure.report(work.prompts[p], result.token_ids, result.logprobs or [])
                    positions: list[TokenLogprob | None] = [*echoed, *generated]
                    logprobs = render.legacy_logprobs(self.tokens, [*echo_ids, *result.token_ids], positions)
                out.append(render.completion_choice(i, text, result.finish_reason, logprobs))
            return out

        if not req.stream:
            done = await self._run(job)
            return render.envelope("text_completion", render.new_id("cmpl"), render.now(), req.model,
                                   choices(done), _usage(done, work))

        def opening(i: int) -> dict[str, Any] | None:
            echo = work.texts[i // work.n] if req.echo else ""
            return render.completion_choice(i, echo, None, None) if echo else None

        # the closing chunks: each choice's log-probs and finish reason, its text replaced by what is left to send
        return self._stream(job, work, "text_completion", "cmpl", req.model,
                            opening=opening, piece=lambda i, s: render.completion_choice(i, s, None, None),
                            closing=lambda done, sent: _with_rest(choices(done), done, work, sent, "text"),
                            include_usage=bool(req.stream_options and req.stream_options.include_usage))

    # ------------------------------------------------------------------------------------------------ chat
    async def chat(self, req: ChatRequest) -> dict[str, Any] | AsyncIterator[str]:
        work = await asyncio.to_thread(chat_work, self.served, req)
        job = Job(work.rows)
        if not req.stream:
            done = await self._run(job)
            return render.envelope("chat.completion", render.new_id("chatcmpl"), render.now(), req.model,
                                   [render.chat_choice(self.tokens, i, self._exposed(work, r))
                                    for i, r in enumerate(done.results)], _usage(done, work))

        def closing(done: JobResult, sent: dict[int, str]) -> list[dict[str, Any]]:
            out = []
            for i, result in enumerate(done.results):
                result = self._exposed(work, result)
                logprobs = render.chat_logprobs(self.tokens, result.logprobs) if result.logprobs is not None else None
                out.append({"index": i, "delta": {}, "logprobs": logprobs, "finish_reason": result.finish_reason})
            return _with_rest(out, done, work, sent, "delta")

        return self._stream(job, work, "chat.completion.chunk", "chatcmpl", req.model,
                            opening=lambda i: {"index": i, "delta": {"role": "assistant", "content": ""},
                                               "logprobs": None, "finish_reason": None},
                            piece=lambda i, s: {"index": i, "delta": {"content": s}, "logprobs": None,
                                                "finish_reason": None},
                            closing=closing,
                            include_usage=bool(req.stream_options and req.stream_options.include_usage))

    def _exposed(self, work: Work, result: GenResult) -> GenResult:
        """The result with its log-probs as the exposure controls let them out (a chat has one prompt)."""
        if result.logprobs is None or not self.exposure.active:
            return result
        shown = self.exposure.report(work.prompts[0], result.token_ids, result.logprobs)
        return replace(result, logprobs=[p for p in shown if p is not None])

    # ------------------------------------------------------------------------------------------------ running
    async def _run(self, job: Job) -> JobResult:
        if not job.rows and not job.score_prompts:
            return JobResult([], [])
        future = self.worker.submit(job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.config.limits.request_timeout_s)
        except TimeoutError:
            future.cancel()
            raise self._timeout() from None
        except ApiError:
            raise
        except Exception as exc:
            raise _engine_failed(exc) from None

    def _timeout(self) -> ApiError:
        limit = self.config.limits.request_timeout_s
        return ApiError(504, f"The request did not finish within this server's limit ({limit:g} s); ask for fewer "
                        "tokens or choices, or try again when the server is less busy.", code="timeout",
                        kind="timeout_error")

    async def _stream(self, job: Job, work: Work, kind: str, prefix: str, model: str, *,
                      opening: Callable[[int], dict[str, Any] | None], piece: Callable[[int, str], dict[str, Any]],
                      closing: Callable[[JobResult, dict[int, str]], list[dict[str, Any]]],
                      include_usage: bool) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()

        def post(item: tuple[int, str] | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(events.put_nowait, item)

        job.on_piece = lambda i, s: post((i, s))
        response_id, created = render.new_id(prefix), render.now()

        def frame(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
            return f"data: {json.dumps(render.envelope(kind, response_id, created, model, choices, usage))}\n\n"

        future = self.worker.submit(job) if job.rows or job.score_prompts else None
        if future is not None:
            future.add_done_callback(lambda _: post(None))
        else:
            post(None)
        deadline = loop.time() + self.config.limits.request_timeout_s
        sent: dict[int, str] = {}  # the text streamed so far, per choice
        try:
            for i in range(len(work.rows)):
                first = opening(i)
                if first is not None:
                    yield frame([first])
            while (item := await asyncio.wait_for(events.get(), max(deadline - loop.time(), 0))) is not None:
                sent[item[0]] = sent.get(item[0], "") + item[1]
                yield frame([piece(*item)])
            done = future.result() if future is not None else JobResult([], [])
            yield frame(closing(done, sent))
            if include_usage:
                yield frame([], _usage(done, work))
        except TimeoutError:
            yield f"data: {json.dumps(self._timeout().body())}\n\n"
        except Exception as exc:
            yield f"data: {json.dumps(_engine_failed(exc).body())}\n\n"
        finally:
            if future is not None:
                future.cancel()  # still waiting: skip it; running: nothing to do
        yield "data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------------ helpers
def _results(done: JobResult, work: Work) -> Sequence[GenResult]:
    """One result per choice; with max_tokens 0 nothing was generated, so each choice is empty."""
    if done.results:
        return done.results
    empty = [] if work.logprobs is not None else None
    return [GenResult([], "", "length", len(work.prompts[i // work.n]), 0, empty) for i in range(len(work.rows))]


def _usage(done: JobResult, work: Work) -> dict[str, int]:
    return render.usage(sum(len(p) for p in work.prompts), sum(r.completion_tokens for r in _results(done, work)))


def _with_rest(closing: list[dict[str, Any]], done: JobResult, work: Work, sent: dict[int, str], where: str
               ) -> list[dict[str, Any]]:
    """Put any text the stream has not sent yet into each choice's closing chunk, so the pieces add up to the
    non-streamed text."""
    for i, (chunk, result) in enumerate(zip(closing, _results(done, work), strict=True)):
        already = sent.get(i, "")
        rest = result.text[len(already):] if result.text.startswith(already) else ""
        if where == "text":
            chunk["text"] = rest
        elif rest:
            chunk["delta"] = {"content": rest}
    return closing


def _engine_failed(exc: BaseException) -> ApiError:
    log.error("a request failed in the engine: %s", type(exc).__name__)
    return ApiError(500, "The server failed while generating this answer; the error has been logged.",
                    code="internal_error", kind="server_error")
