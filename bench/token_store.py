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

With `--format parquet` the same records are written as `--shards` Parquet files (row groups of 4,096 records)
read through a glob, and the contenders are:

  streamed: as above; each Parquet file converted by `datasets` into a memory-mapped Arrow file (a fresh
            `datasets` cache per run, so the conversion is in the time) and read from the map.
  table:    the same, but each file read whole into an Arrow table in memory with `pyarrow.parquet.read_table`
            (the reader until 2026-12-03), every shard of the glob at once.

Peak memory (`peak_mem_mb`) is the worker's peak RSS (VmHWM) minus its RSS after imports and loading the
tokenizer. VmHWM also counts the pages of memory-mapped files, which are page cache the kernel may drop and
other processes share, so `anon_peak_mb` reports the peak of anonymous memory alone (RssAnon, sampled every 2 ms,
above its level at the start). With Parquet, `datasets` and `pyarrow` are imported before the window opens, for
both contenders: their modules take ~46 MB, whatever the corpus's size. `same_tokens`: all stores hold the same
bytes. Each contender runs in its own process, alternating.

    python bench/token_store.py                 # 64 MB corpus, SmolLM2's tokenizer
    python bench/token_store.py --mb 8 --repeats 1
    python bench/token_store.py --format parquet
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
from harness import (
    REPO,
    AnonPeak,
    alternate,
    emit,
    median_of,
    peak_rss_mb,
    provenance,
    ratios,
    reset_peak_rss,
    worker_main,
)

CONTENDERS = {"jsonl": ("streamed", "held", "whole"), "parquet": ("streamed", "table")}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=64.0, help="corpus size in megabytes of JSONL")
    parser.add_argument("--tokenizer", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--format", choices=tuple(CONTENDERS), default="jsonl", help="how the corpus is stored")
    parser.add_argument("--shards", type=int, default=8, help="Parquet files the corpus is split into")
    parser.add_argument("--corpus", default="", help="(set by the bench for its workers)")
    return parser.parse_args(argv)


def write_corpus(folder: Path, args: argparse.Namespace) -> str:
    """The corpus as one JSONL file, or as `args.shards` Parquet files of the same records; returns the source."""
    from distill.builtin.corpus import tiny_stories

    path = folder / "corpus.jsonl"
    target, written, seed = args.mb * 2**20, 0, 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            for story in tiny_stories(2000, seed=seed):
                line = json.dumps({"text": story}) + "\n"
                out.write(line)
                written += len(line)
            seed += 1
    if args.format == "jsonl":
        return str(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    path.unlink()
    per = -(-len(texts) // args.shards)
    for shard in range(args.shards):
        table = pa.table({"text": texts[shard * per:(shard + 1) * per]})
        pq.write_table(table, folder / f"corpus-{shard:03d}.parquet", row_group_size=4096)
    return str(folder / "corpus-*.parquet")


def read_parquet_whole(path: Path, field: str) -> object:
    """The Parquet reader until 2026-12-03 (`table`): the whole file as one Arrow table in memory."""
    import pyarrow.parquet as pq

    from distill.data.records import BlockRows, Records

    return Records(BlockRows.of_arrow(pq.read_table(path)), path, "row")


def run(contender: str, args: argparse.Namespace) -> dict:
    import psutil

    from distill.data.dataset import tokenize_data
    from distill.data.token_store import write_store
    from distill.models import load_tokenizer
    from distill.recipe import DataConfig

    tokenizer = load_tokenizer("bench", args.tokenizer)
    cache = Path(tempfile.mkdtemp(prefix="distill-bench-store-"))
    os.environ["DISTILL_CACHE"] = str(cache)
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    if args.format == "parquet":  # imported before the window: ~46 MB of modules, whatever the corpus's size
        import datasets  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    cfg = DataConfig(train=args.corpus, max_length=args.max_length, token_cache=contender != "whole")
    if contender == "table":
        import distill.data.sources as sources

        sources._read_parquet = read_parquet_whole
    if contender == "held":  # every record a dict in memory before tokenizing starts
        import distill.data.dataset as dataset

        read = dataset.read_training_records
        dataset.read_training_records = lambda c: (lambda r: r.replaced(list(r)))(read(c))
    reset_peak_rss()
    before = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    with AnonPeak() as anon:
        data = tokenize_data(cfg, tokenizer)
        if contender == "whole":
            root = write_store(cache / "tokens" / "whole", data.examples, {"data_format": data.format,
                                                                            "dropped": data.dropped})
        else:
            root = data.examples.root
    seconds = time.perf_counter() - start
    peak = peak_rss_mb() - before
    digest = hashlib.sha256((root / "ids.bin").read_bytes()).hexdigest()[:16]
    corpus_bytes = sum(f.stat().st_size for f in Path(args.corpus).parent.glob(Path(args.corpus).name))
    return {"time_s": round(seconds, 2), "peak_mem_mb": round(peak, 1), "anon_peak_mb": round(anon.rise_mb, 1),
            "examples": len(data.examples), "tokens_digest": digest, "corpus_mb": round(corpus_bytes / 2**20, 1)}


def main() -> None:
    args = parse(__import__("sys").argv[1:])
    folder = Path(tempfile.mkdtemp(prefix="distill-bench-corpus-"))
    corpus = write_corpus(folder, args)
    passthrough = [f"--mb={args.mb}", f"--tokenizer={args.tokenizer}", f"--max-length={args.max_length}",
                   f"--format={args.format}", f"--corpus={corpus}"]
    contenders = CONTENDERS[args.format]
    results = alternate(REPO / "bench" / "token_store.py", contenders, args.repeats, passthrough)
    digests = {r["tokens_digest"] for rs in results.values() for r in rs}
    figures: dict = {}
    for other in contenders[1:]:  # streamed against each other contender, by each measure
        for key, name in (("peak_mem_mb", "peak_mem"), ("anon_peak_mb", "anon_peak"), ("time_s", "time")):
            per_rep = ratios(results["streamed"], results[other], key)
            figures[f"{name}_vs_{other}"] = harness.median_ratio(per_rep)
            figures[f"{name}_vs_{other}_per_rep"] = per_rep
    emit({"summary": "token_store", "format": args.format, "same_tokens": len(digests) == 1, **figures,
          **{name: {key: median_of(results[name], key) for key in ("time_s", "peak_mem_mb", "anon_peak_mb")}
             for name in contenders},
          "corpus_mb": results["streamed"][0]["corpus_mb"], "examples": results["streamed"][0]["examples"],
          "setting": {k: v for k, v in vars(args).items() if k not in ("repeats", "corpus")},
          "provenance": provenance()})


if __name__ == "__main__":
    if not worker_main({c: (lambda a, c=c: run(c, a)) for cs in CONTENDERS.values() for c in cs}, parse):
        main()
