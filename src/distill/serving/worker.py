"""One thread owns the model; requests wait in a queue and run together.

A model forward pass over 16 rows costs little more than over one on a CPU or GPU that is not saturated, so the
server's throughput comes from running concurrent requests as one batch. The worker takes the first waiting job,
then keeps taking jobs while they arrive less than `window_s` apart (a burst of clients reaches it one parsed
request at a time), up to `max_batch_size` rows or ten windows, and runs them all as one `Engine.generate` call
(echo scoring as one `Engine.score` call). Requests that arrive while a batch runs form the next one: the engine
runs a batch to its end (static batching), so a lone request waits at most a window.

Only this thread touches the model, so nothing in the engine needs a lock. A job whose caller gave up (timeout,
disconnected client) before its batch started is skipped; one already running finishes and its result is dropped:
the engine cannot take a row out of a running batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from distill.generation.engine import Engine, GenRequest, GenResult, TokenLogprob

log = logging.getLogger("distill.serve")

MAX_WINDOWS = 10  # a batch waits at most this many windows for its burst to arrive
OnPiece = Callable[[int, str], None]  # (row index within the job, new text) — called on the worker thread


@dataclass
class Job:
    """One HTTP request's work: rows to generate (one per choice) and prompts to score (echo)."""

    rows: list[GenRequest]
    score_prompts: list[list[int]] = field(default_factory=list)
    score_k: int = 0
    on_piece: OnPiece | None = None
    future: Future[JobResult] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return max(len(self.rows), len(self.score_prompts), 1)


@dataclass
class JobResult:
    results: list[GenResult]
    scores: list[list[TokenLogprob | None]]


@dataclass
class WorkerStats:
    """Counters for tests and the benchmark: `generate_calls` < `requests` means batching happened."""

    requests: int = 0
    generate_calls: int = 0
    score_calls: int = 0
    rows: int = 0
    largest_batch: int = 0  # rows in the largest generate call


class BatchWorker:
    def __init__(self, engine: Engine, *, max_batch_size: int = 16, window_s: float = 0.005):
        self.engine, self.max_batch_size, self.window_s = engine, max_batch_size, window_s
        self.stats = WorkerStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="distill-serve-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> Future[JobResult]:
        if not self._thread.is_alive():
            raise RuntimeError("the engine worker has stopped")
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the batch now running; jobs still waiting are cancelled."""
        self._queue.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------------ the thread
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch, stopping = self._collect(first)
            self._run(batch)
            if stopping:
                break
        while True:  # cancel what is left
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.cancel()

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The first job, then more while they keep arriving less than a window apart (a burst of clients reaches
        the worker one parsed request at a time), up to the batch size and at most MAX_WINDOWS windows in all."""
        batch, rows = [first], first.size
        now = time.monotonic()
        end, gap_end = now + MAX_WINDOWS * self.window_s, now + self.window_s
        while rows < self.max_batch_size:
            try:
                left = min(end, gap_end) - time.monotonic()
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
            rows += job.size
            gap_end = time.monotonic() + self.window_s
        return batch, False

    def _run(self, batch: list[Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.stats.requests += len(live)
        rows: list[GenRequest] = []
        owners: list[tuple[Job, int]] = []
        for job in live:
            owners.extend((job, i) for i in range(len(job.rows)))
            rows.extend(job.rows)

        def on_token(index: int, token_id: int, piece: str) -> None:
            job, local = owners[index]
            if job.on_piece is not None and piece:
                try:
                    job.on_piece(local, piece)
                except Exception:  # a client's event loop gone (server stopping): its result is dropped anyway
                    log.debug("could not hand a streamed piece on", exc_info=True)

        try:
            results = self.engine.generate(rows, on_token=on_token) if rows else []
            if rows:
                self.stats.generate_calls += 1
                self.stats.rows += len(rows)
                self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
            scores = self._score(live)
        except Exception as exc:  # a bug or an out-of-memory: every request of the batch fails, the server lives on
            log.exception("the engine failed on a batch of %d requests", len(live))
            for job in live:
                job.future.set_exception(exc)
            return
        start = 0
        for job in live:
            job.future.set_result(JobResult(results[start:start + len(job.rows)], scores.get(id(job), [])))
            start += len(job.rows)

    def _score(self, jobs: list[Job]) -> dict[int, list[list[TokenLogprob | None]]]:
        """Echo scoring for every job that asks, in one call at the largest k asked (each job trims its own)."""
        wanting = [job for job in jobs if job.score_prompts]
        if not wanting:
            return {}
        k = max(job.score_k for job in wanting)
        scored = self.engine.score([p for job in wanting for p in job.score_prompts], k)
        self.stats.score_calls += 1
        out, start = {}, 0
        for job in wanting:
            mine = scored[start:start + len(job.score_prompts)]
            start += len(job.score_prompts)
            if job.score_k < k:
                for positions in mine:
                    for position in positions:
                        if position is not None:
                            position.top = position.top[:job.score_k]
            out[id(job)] = mine
        return out
