"""`distill cache`: run the recipe's teacher once over its training data and store its signal (the top-k, or tokens
drawn from it: `teacher.cache_scheme`).

The sequences are exactly the ones training builds from the recipe (same tokenizer, formatting, packing), so a
cache row lines up with a training position by construction, and the data hash in the manifest proves it later.

Work is cut into shards of consecutive examples (about `shard_tokens` tokens each) that do not depend on the number
of processes: under `accelerate launch`, process r builds shards r, r + N, r + 2N … and the main process writes one
manifest over all of them. A killed build resumes: sealed shards are verified and kept, the shard that was being
written continues from its journal (see shard.py), and nothing is computed or stored twice.

Where the signals come from is the one part that varies, behind `SignalSource` (live.py): the live teacher on this
machine (`LiveSignals`) or an OpenAI-compatible endpoint (`ApiSignals` in teachers/api/harvest.py, with
`teacher.api`). The shard plan, the journal, the seals and the manifest are written here, once, for both; a
source only turns each shard's pending examples into signals, in that order.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from distill import __version__
from distill.atomic import write_json
from distill.data.dataset import BatchPlan, TokenizedData, tokenize_data
from distill.errors import CacheError, RecipeError
from distill.locking import LOCK_NAME, FolderLock, clear_owned
from distill.losses.lm_head import check_head
from distill.models import check_logit_width, load_teacher, load_tokenizer, output_width
from distill.progress import progress as progress_display
from distill.recipe import Recipe
from distill.teachers.cache import codec, sampled_codec
from distill.teachers.cache.fingerprint import setup_differences
from distill.teachers.cache.for_recipe import recipe_setup
from distill.teachers.cache.live import LiveSignals, Sampling, SignalSource, capture
from distill.teachers.cache.sampled_codec import SampledRecord
from distill.teachers.cache.shard import ShardWriter, read_seal, remove_shard
from distill.teachers.cache.store import (
    BUILD,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TAIL_METHOD,
    VOCAB,
    verify_shard,
)

__all__ = ["DEFAULT_SHARD_TOKENS", "build_cache", "capture", "plan_shards", "planned_examples", "vocab_order"]

DEFAULT_SHARD_TOKENS = 1 << 18
SAMPLING_SEED = 0  # a sampled cache's draws depend on the teacher and data alone, not on the recipe's seed


def vocab_order(data: TokenizedData, vocab_size: int) -> np.ndarray:
    """The vocabulary sorted by how often each id occurs in the data (ties by id): rank → id."""
    counts = np.bincount(np.concatenate([np.asarray(e.input_ids) for e in data.examples]), minlength=vocab_size)
    return np.lexsort((np.arange(vocab_size), -counts[:vocab_size])).astype(np.int32)


def planned_examples(recipe: Recipe, n_examples: int) -> list[int]:
    """The examples the recipe's training run visits (all its steps), in index order."""
    t = recipe.training
    return BatchPlan(n_examples, t.batch_size, t.micro_batch_size, 1, recipe.seed).visited(t.max_steps)


def plan_shards(examples: list[int], tokens: list[int], shard_tokens: int) -> list[list[int]]:
    """Consecutive runs of examples with about `shard_tokens` target tokens each."""
    shards: list[list[int]] = [[]]
    filled = 0
    for example in examples:
        if filled >= shard_tokens:
            shards.append([])
            filled = 0
        shards[-1].append(example)
        filled += tokens[example]
    return [s for s in shards if s]


def build_cache(recipe: Recipe, out: Path, *, encoding: str = "q8", batch_size: int = 8,
                shard_tokens: int = DEFAULT_SHARD_TOKENS, planned_only: bool = False, overwrite: bool = False
                ) -> dict[str, Any]:
    """Build (or finish, or repair) the cache of `recipe` in `out`; returns the manifest. With `teacher.api` the
    signals are harvested from the endpoint (`batch_size` does not apply), else computed by `teacher.model`."""
    t = recipe.teacher
    if t is None or (t.model is None and t.api is None):
        raise RecipeError("teacher.model: `distill cache` runs the teacher; set teacher.model (a local model) or "
                          "teacher.api (an OpenAI-compatible endpoint to harvest)")
    if problem := encoding_problem(encoding, recipe):
        raise CacheError(f"--encoding: {problem}")
    accelerator = Accelerator()
    started = time.perf_counter()
    with accelerator.main_process_first():
        tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
        data = tokenize_data(recipe.data, tokenizer)
        teacher = load_teacher(t) if t.api is None else None
    vocab = len(tokenizer)
    if teacher is not None:
        check_logit_width("teacher.model", output_width(teacher), vocab)
    if t.cache_scheme == "topk" and t.top_k > vocab:
        raise RecipeError(f"teacher.top_k: {t.top_k} is more than the vocabulary ({vocab:,} tokens)")
    examples = planned_examples(recipe, len(data.examples)) if planned_only else list(range(len(data.examples)))
    setup = recipe_setup(recipe, tokenizer, data, teacher)
    if t.cache_scheme == "sampled":  # every example's draws are seeded by (this seed, its index): see live.Sampling
        setup["scheme"]["seed"] = SAMPLING_SEED
    setup |= {
        "encoding": encoding,
        "examples": "all" if not planned_only else {"plan": {
            "seed": recipe.seed, "batch_size": recipe.training.batch_size, "max_steps": recipe.training.max_steps}},
    }
    with ExitStack() as stack:
        if teacher is not None:
            check_head(teacher, "teacher.model")
            teacher.to(accelerator.device)
            sampling = None if t.cache_scheme == "topk" else Sampling(t.sample_draws, t.proposal_temperature,
                                                                       setup["scheme"]["seed"], encoding == "counts")
            source: SignalSource = LiveSignals(teacher, data, tokenizer.pad_token_id, t.top_k,
                                               recipe.capture_temperature, vocab, batch_size, accelerator.device,
                                               sampling)
        else:
            from distill.teachers.api.harvest import ApiSignals

            source = stack.enter_context(ApiSignals.connect(t.api, tokenizer, data, t.top_k))
            setup["teacher"] = setup["teacher"] | source.identity  # + where it was served, and what the server said
        return _build(accelerator, out, {"setup": setup, "shard_tokens": shard_tokens}, data, vocab, examples,
                      source, encoding, overwrite, started)


def _build(accelerator: Accelerator, out: Path, build: dict[str, Any], data: TokenizedData, vocab: int,
           examples: list[int], source: SignalSource, encoding: str, overwrite: bool, started: float
           ) -> dict[str, Any]:
    """Plan the shards of `examples`, write this process's pending ones from `source`, and (main process) seal the
    manifest over all of them."""
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    # the main process holds the folder's lock for the whole build: a second `distill cache` into it is refused
    lock = FolderLock(out, "--out", CacheError) if main else None
    if lock is not None:
        lock.acquire()  # creates the folder; refuses a file there or a folder it cannot write
    try:
        if main:
            _prepare(out, build, data, vocab, overwrite)
        accelerator.wait_for_everyone()
        if (out / MANIFEST).exists():  # complete and intact: nothing to do
            if not main:
                return {}
            print(f"cache: {out} is complete and matches the recipe; nothing to do")
            return json.loads((out / MANIFEST).read_text())
        rank_of = codec.inverse_permutation(np.load(out / VOCAB))
        tokens = [e.n_targets for e in data.examples]
        shards = plan_shards(examples, tokens, build["shard_tokens"])
        mine = [n for n in range(rank, len(shards), world) if read_seal(out, n) is None]

        compute_start = time.perf_counter()
        computed = _write_shards(out, [(n, shards[n]) for n in mine], tokens, source, encoding, rank_of,
                                 progress=main)
        counts = torch.tensor([computed, time.perf_counter() - compute_start], dtype=torch.float64,
                              device=accelerator.device)
        totals = accelerator.reduce(counts.unsqueeze(0), reduction="sum").squeeze(0)
        accelerator.wait_for_everyone()
        manifest = None
        if main:
            manifest = _finish(out, build, len(shards), world, computed=int(totals[0]),
                               seconds=time.perf_counter() - started, compute_seconds=float(totals[1]) / world)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    finally:
        if lock is not None:
            lock.release()
    return manifest or {}


def _write_shards(out: Path, shards: list[tuple[int, list[int]]], tokens: list[int], source: SignalSource,
                  encoding: str, rank_of: np.ndarray, progress: bool) -> int:
    """Append the signal of every pending example of these shards (continuing each from its journal), sealing each
    shard once its last example is in; returns the tokens computed. `tokens`: target tokens per example."""
    bar = progress_display("cache", "{tps} tok/s", unit="tokens", disable=not progress)
    task = bar.add_task("cache", total=sum(tokens[e] for _, examples in shards for e in examples), tps="—")
    pending: dict[int, list[int]] = {}
    for number, examples in shards:
        writer = ShardWriter(out, number)  # cuts a torn journal tail; reopened below when its turn comes
        writer.close()
        done = writer.done
        bar.advance(task, sum(tokens[e] for e in done))
        pending[number] = [e for e in examples if e not in done]
    computed, started = 0, time.perf_counter()
    planned = dict(shards)
    left = {number: len(examples) for number, examples in pending.items()}
    shard_of = {e: number for number, examples in pending.items() for e in examples}
    writer: ShardWriter | None = None
    try:
        with bar:
            for number in [n for n, count in left.items() if count == 0]:  # journaled in full before a kill
                ShardWriter(out, number).seal(planned[number])
            for example, signal in source.signals([examples for examples in pending.values() if examples]):
                number = shard_of[example]
                if writer is None or writer.number != number:
                    writer = ShardWriter(out, number)
                writer.append(example, len(signal), captured_mass(signal), encode_record(signal, rank_of, encoding))
                computed += len(signal)
                left[number] -= 1
                if left[number] == 0:
                    writer.seal(planned[number])
                    writer = None
                bar.update(task, advance=tokens[example],
                           tps=f"{computed / max(time.perf_counter() - started, 1e-9):,.0f}")
    finally:
        if writer is not None:
            writer.close()
    assert not any(left.values()), "the signal source skipped examples"
    return computed


def captured_mass(signal: codec.Signal | SampledRecord) -> float:
    """The teacher's mass on the stored tokens, summed over positions (the manifest's `captured_mass_mean`)."""
    if isinstance(signal, SampledRecord):
        return float(np.exp(signal.logprobs, dtype=np.float64)[signal.counts > 0].sum())
    return float(np.exp(signal.logprobs, dtype=np.float64).sum())


def encoding_problem(encoding: str, recipe: Recipe) -> str | None:
    """Why `encoding` cannot hold this recipe's cache, or None. `counts` drops the log-probabilities, which only the
    teacher as its own proposal (t = 1) read with count weights can do without (sampled_codec.py)."""
    if encoding not in sampled_codec.ENCODINGS:
        return f"unknown encoding {encoding!r}; use one of {', '.join(sampled_codec.ENCODINGS)}"
    if encoding != "counts":
        return None
    t = recipe.teacher
    if t.cache_scheme != "sampled":  # (an API teacher is never sampled: the recipe refuses it)
        return ("counts stores sampled draws without their log-probabilities; it needs teacher.cache_scheme: sampled "
                "(use q8 or exact for a top-k cache)")
    if t.proposal_temperature != 1.0:
        return (f"counts keeps no log-probabilities, and teacher.proposal_temperature: {t.proposal_temperature:g} "
                "weighs every draw by one; use q8 or exact, or proposal_temperature: 1")
    return None


def encode_record(signal: codec.Signal | SampledRecord, rank_of: np.ndarray, encoding: str) -> bytes:
    if isinstance(signal, SampledRecord):
        return sampled_codec.encode(signal, rank_of, encoding)
    return codec.encode(signal, rank_of, encoding)


# every file a build writes (temporary ones included); `--overwrite` deletes these and refuses anything else
_CACHE_ENTRY = re.compile(r"^(shard-\d{5,}\.(bin|idx|json)(\.tmp)?|vocab_order\.npy(\.tmp\.npy)?"
                          r"|(manifest|build)\.json(\.tmp)?|" + re.escape(LOCK_NAME) + ")$")


def _prepare(out: Path, build: dict[str, Any], data: TokenizedData, vocab: int, overwrite: bool) -> None:
    """Make `out` ready: new, or a build of the same setup to continue (damaged shards dropped), else refuse.
    `--overwrite` empties only a teacher cache: a folder holding anything else is refused, never deleted."""
    if overwrite:
        clear_owned(out, lambda name: bool(_CACHE_ENTRY.match(name)), lambda foreign: CacheError(
            f"--out: {out} is not a teacher cache (it holds {', '.join(foreign[:5])}); --overwrite deletes only a "
            "cache distill wrote. Choose an empty or new folder"))
    manifest_path, build_path = out / MANIFEST, out / BUILD
    if manifest_path.exists() or build_path.exists():
        previous = json.loads((manifest_path if manifest_path.exists() else build_path).read_text())
        problems = setup_differences(previous["setup"], build["setup"], wanted_name="recipe")
        if previous.get("shard_tokens") != build["shard_tokens"]:
            problems.append(f"--shard-tokens: {previous.get('shard_tokens')} in the cache, {build['shard_tokens']} "
                            "now")
        if problems:
            raise CacheError(f"--out: {out} holds a cache of a different setup: {'; '.join(problems)}. Use another "
                             "--out, or --overwrite to replace it")
        damaged = False
        for seal_path in sorted(out.glob("shard-*.json")):
            seal = json.loads(seal_path.read_text())
            problem = verify_shard(out, seal)
            if problem:
                print(f"cache: {problem}; rebuilding that shard")
                remove_shard(out, seal["number"])
                damaged = True
        if manifest_path.exists() and damaged:
            write_json(build_path, build)
            manifest_path.unlink()
        return
    if any(p.name != LOCK_NAME for p in out.iterdir()):
        raise CacheError(f"--out: {out} exists and is not a teacher cache; choose an empty or new folder "
                         "(--overwrite deletes only a cache distill wrote)")
    tmp = out / (VOCAB + ".tmp.npy")
    np.save(tmp, vocab_order(data, vocab))
    tmp.replace(out / VOCAB)
    write_json(build_path, build)


def _finish(out: Path, build: dict[str, Any], n_shards: int, world: int, computed: int, seconds: float,
            compute_seconds: float) -> dict[str, Any]:
    """Write the manifest over all sealed shards; from then on the cache is complete."""
    seals = [read_seal(out, n) for n in range(n_shards)]
    missing = [n for n, seal in enumerate(seals) if seal is None]
    if missing:
        raise CacheError(f"cache: shards {missing} were not sealed by their processes; run `distill cache` again")
    n_tokens = sum(s["tokens"] for s in seals)
    record_bytes = sum(s["bytes"] for s in seals)
    all_bytes = record_bytes + sum(s["index_bytes"] for s in seals) + (out / VOCAB).stat().st_size
    setup = build["setup"]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "k": setup["k"], "capture_temperature": setup["capture_temperature"], "encoding": setup["encoding"],
        "scheme": setup["scheme"],
        "n_examples": sum(s["examples"] for s in seals), "n_tokens": n_tokens,
        "bytes_per_token": all_bytes / max(n_tokens, 1), "record_bytes_per_token": record_bytes / max(n_tokens, 1),
        "bytes": all_bytes, "vocab_size": setup["tokenizer"]["vocab_size"], "tail": TAIL_METHOD,
        "captured_mass_mean": sum(s["captured_mass_sum"] for s in seals) / max(n_tokens, 1),
        "setup": setup, "shard_tokens": build["shard_tokens"], "shards": seals,
        "build": {"processes": world, "tokens_computed": computed, "seconds": seconds,
                  "tokens_per_s": computed / max(compute_seconds, 1e-9), "distill": __version__},
    }
    write_json(out / MANIFEST, manifest)
    (out / BUILD).unlink(missing_ok=True)
    return manifest
