"""The first build of a token store: streamed (as training builds it) vs all examples in memory first (as it was).

Why: a multi-GB corpus must not fill RAM in every process while it is tokenized. The store is built once and
memory-mapped afterwards; this measures the build itself. Both contenders read the same JSONL corpus (tiny-stories
sentences, `--mb` megabytes) with the same tokenizer and settings (packed into 512-token blocks) and write a store:

  streamed: `tokenize_data` with a fresh token cache: records tokenized 1,024 at a time, packed incrementally and
            written as they come (data/example_stream.py).
  held:     the same streamed build, but with every record read into memory first (a list of dicts, as the first
            build read them until records became lazy: data/records.py).
  whole:    every example tokenized and packed into Python lists first (`data.token_cache: false`, the in-memory
            path), then written with `write_store` — the first build's memory before streaming.

Peak memory is the worker's peak RSS minus its RSS after imports and loading the tokenizer. `same_tokens`: all
stores hold the same bytes. Each contender runs in its own process, alternating.

    python bench/token_store.py                 # 64 MB corpus, SmolLM2's tokenizer
    python bench/token_store.py --mb 8 --repeats 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import harness
from harness import REPO, alternate, emit, median_of, peak_rss_mb, provenance, ratios, reset_peak_rss, worker_main

CONTENDERS = ("streamed", "held", "whole")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=64.0, help="corpus size in megabytes of JSONL")
    parser.add_argument("--tokenizer", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpus", default="", help="(set by the bench for its workers)")
    return parser.parse_args(argv)


def write_corpus(path: Path, megabytes: float) -> None:
    from distill.builtin.corpus import tiny_stories

    target, written, seed = megabytes * 2**20, 0, 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            for story in tiny_stories(2000, seed=seed):
                line = json.dumps({"text": story}) + "\n"
                out.write(line)
                written += len(line)
            seed += 1


def run(contender: str, args: argparse.Namespace) -> dict:
    import psutil

    from distill.data.dataset import tokenize_data
    from distill.data.token_store import write_store
    from distill.models import load_tokenizer
    from distill.recipe import DataConfig

    tokenizer = load_tokenizer("bench", args.tokenizer)
    cache = Path(tempfile.mkdtemp(prefix="distill-bench-store-"))
    os.environ["DISTILL_CACHE"] = str(cache)
    cfg = DataConfig(train=args.corpus, max_length=args.max_length, token_cache=contender != "whole")
    if contender == "held":  # every record a dict in memory before tokenizing starts
        import distill.data.dataset as dataset

        read = dataset.read_training_records
        dataset.read_training_records = lambda c: (lambda r: r.replaced(list(r)))(read(c))
    reset_peak_rss()
    before = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    data = tokenize_data(cfg, tokenizer)
    if contender == "whole":
        root = write_store(cache / "tokens" / "whole", data.examples, {"data_format": data.format,
                                                                        "dropped": data.dropped})
    else:
        root = data.examples.root
    seconds = time.perf_counter() - start
    peak = peak_rss_mb() - before
    digest = hashlib.sha256((root / "ids.bin").read_bytes()).hexdigest()[:16]
    return {"time_s": round(seconds, 2), "peak_mem_mb": round(peak, 1), "examples": len(data.examples),
            "tokens_digest": digest, "corpus_mb": round(Path(args.corpus).stat().st_size / 2**20, 1)}


def main() -> None:
    args = parse(__import__("sys").argv[1:])
    folder = Path(tempfile.mkdtemp(prefix="distill-bench-corpus-"))
    corpus = folder / "corpus.jsonl"
    write_corpus(corpus, args.mb)
    passthrough = [f"--mb={args.mb}", f"--tokenizer={args.tokenizer}", f"--max-length={args.max_length}",
                   f"--corpus={corpus}"]
    results = alternate(REPO / "bench" / "token_store.py", CONTENDERS, args.repeats, passthrough)
    mem, tim = ratios(results["streamed"], results["whole"], "peak_mem_mb"), ratios(results["streamed"],
                                                                                      results["whole"], "time_s")
    held_mem = ratios(results["streamed"], results["held"], "peak_mem_mb")
    digests = {r["tokens_digest"] for rs in results.values() for r in rs}
    emit({"summary": "token_store", "peak_mem_ratio": harness.median_ratio(mem),
          "time_ratio": harness.median_ratio(tim),
          "peak_mem_ratio_per_rep": mem, "time_ratio_per_rep": tim, "same_tokens": len(digests) == 1,
          "peak_mem_vs_held_records": harness.median_ratio(held_mem), "peak_mem_vs_held_records_per_rep": held_mem,
          **{name: {key: median_of(results[name], key) for key in ("time_s", "peak_mem_mb")} for name in CONTENDERS},
          "corpus_mb": results["streamed"][0]["corpus_mb"], "examples": results["streamed"][0]["examples"],
          "setting": {k: v for k, v in vars(args).items() if k not in ("repeats", "corpus")},
          "provenance": provenance()})


if __name__ == "__main__":
    if not worker_main({c: (lambda a, c=c: run(c, a)) for c in CONTENDERS}, parse):
        main()
