"""`distill serve` throughput: generated tokens/s with 1, 8 and 32 concurrent clients, and what batching buys.

The server runs in this process (uvicorn in a thread, as the tests run it) with --max-batch-size 32; each client is a
thread that sends chat requests one after another (seeded, temperature 0.7, `max_tokens` 64 by default) and counts
the `usage.completion_tokens` it gets back. One request at a time is the baseline: `batching_speedup` is the tokens/s
with 32 clients over that. Peak memory is this process's peak RSS (the model, the server and the clients).

Output: JSON lines, one per concurrency level, the last a summary.

    python bench/serve.py                       # SmolLM2-135M-Instruct (builtin), ~3 min on 2 CPU cores
    python bench/serve.py --tiny                # the tiny test model: a smoke test of the script
    python bench/serve.py MODEL --max-tokens 32 --clients 1 4 16
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import httpx
import uvicorn

import harness
from distill.serving import ServeConfig, ServeLimits
from distill.serving.app import create_app
from distill.serving.launch import bind, build_service, load_model
from distill.serving.service import Service

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Why is the sky blue?",
             "Give me three tips for learning to cook.", "Explain photosynthesis to a child.",
             "What is a prime number?", "Describe a cat in two sentences.", "How do airplanes fly?"]


def start(service: Service) -> tuple[str, uvicorn.Server, threading.Thread]:
    listening = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening.sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return listening.url, server, thread


def level(url: str, model: str, service: Service, clients: int, per_client: int, max_tokens: int) -> dict[str, Any]:
    """`clients` threads, each sending `per_client` requests in turn; tokens/s over the whole wall time."""
    stats = service.worker.stats
    calls0, rows0 = stats.generate_calls, stats.rows
    tokens, latencies, lock = [0], [], threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            barrier.wait()
            for r in range(per_client):
                body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[(c + r) % len(QUESTIONS)]}],
                        "max_tokens": max_tokens, "temperature": 0.7, "seed": c * 1000 + r}
                began = time.perf_counter()
                answer = http.post("/v1/chat/completions", json=body)
                answer.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - began)
                    tokens[0] += answer.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    calls = stats.generate_calls - calls0
    return {"bench": "serve", "clients": clients, "requests": clients * per_client, "completion_tokens": tokens[0],
            "seconds": round(seconds, 3), "tokens_per_s": round(tokens[0] / seconds, 2),
            "median_latency_s": round(statistics.median(latencies), 3), "engine_calls": calls,
            "mean_rows_per_call": round((stats.rows - rows0) / max(calls, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.model_arguments(parser)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="Requests per level (at least one per client).")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    name = harness.chosen_model(args)

    harness.reset_peak_rss()
    loaded, tokenizer = load_model(name, args.dtype)
    config = ServeConfig(name, ServeLimits(max_tokens=args.max_tokens), max_batch_size=args.max_batch_size)
    service = build_service(loaded, tokenizer, config)
    url, server, thread = start(service)
    try:
        level(url, name, service, 1, 1, 8)  # warm-up
        results = {}
        for clients in args.clients:
            per_client = max(1, args.requests // clients) if clients > 1 else max(1, args.requests // 8)
            record = {"model": name, **level(url, name, service, clients, per_client, args.max_tokens)}
            results[clients] = record
            harness.emit(record)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        service.close()
    lone, most = results[min(results)], results[max(results)]
    harness.emit({"summary": True, "bench": "serve", "model": name, "max_tokens": args.max_tokens,
                  "max_batch_size": args.max_batch_size,
                  "tokens_per_s": {str(c): r["tokens_per_s"] for c, r in results.items()},
                  "batching_speedup": round(most["tokens_per_s"] / lone["tokens_per_s"], 2),
                  "speedup_clients": [min(results), max(results)], "threads": _threads(),
                  "peak_rss_mb": round(harness.peak_rss_mb(), 1),
                  **harness.provenance()})


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
