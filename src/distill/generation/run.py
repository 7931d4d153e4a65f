"""`distill generate`: the teacher writes `n` completions per prompt, a verifier judges each, and the accepted,
distinct ones (at most `max_accepted` per prompt) become training data.

set-up (prompts, teacher, fingerprint) → the journal says what is done → the backend writes the rest, each sample
judged and journalled as it finishes, under a progress bar → selection over the whole journal → `samples.jsonl`,
`train.jsonl` and `manifest.json`, each written atomically. Killed at any point, the same command resumes; the
outputs are rewritten from the journal, so a finished generation run again only rewrites them.

With `generate.defenses` (a key file) the local teacher writes through the defenses' logits processors, at the
exposure's forced temperature if it sets one (generate records text only, so log-prob caps and noise have nothing to
act on). The fingerprint and the manifest record the defenses' public view and a hash of the key file — a changed
key is another run, which a resume refuses — and never a secret.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distill.atomic import temporary_name, write_json, write_jsonl
from distill.errors import DataError, RecipeError
from distill.generation.backends import ApiBackend, Completion, LocalBackend
from distill.generation.journal import JOURNAL, RUN, Journal
from distill.generation.prompts import Prompt, load_prompts
from distill.generation.selection import rates, select
from distill.generation.verifiers import Verdict, build_verifier
from distill.locking import FolderLock, clear_owned
from distill.progress import progress as progress_display
from distill.recipe.schema import GenerationRecipe, Recipe
from distill.results.provenance import provenance

SAMPLES, TRAIN, MANIFEST = "samples.jsonl", "train.jsonl", "manifest.json"
MANIFEST_VERSION = 1


def run_generation(recipe: Recipe | GenerationRecipe, *, overwrite: bool = False, progress: bool = True
                   ) -> dict[str, Any]:
    config = recipe.generate
    assert config is not None
    out = Path(config.output)
    with FolderLock(out, "generate.output", DataError):
        _prepare(out, overwrite)
        prompts = load_prompts(config)
        verify = build_verifier(config.verifier) if config.verifier is not None else None
        keys = _keyfile(recipe)
        if keys is not None and keys.exposure is not None and keys.exposure.temperature is not None:
            # the forced temperature is what the samples were drawn at: rows and fingerprint record it
            forced = config.sampling.model_copy(update={"temperature": keys.exposure.temperature})
            config = config.model_copy(update={"sampling": forced})
        backend, teacher, rendering, close = _backend(recipe, config, keys)
        try:
            # what decides the samples; selection (max_accepted, dedup) is redone from the journal every run; the
            # key file by its content, not its path
            settings = config.model_dump(mode="json", exclude={"output", "batch_size", "max_accepted", "dedup",
                                                               "defenses"})
            fingerprint = {"generate": settings, "teacher": {k: v for k, v in teacher.items() if k != "api"},
                           "rendering": rendering, "prompts": _prompts_digest(prompts)}
            if keys is not None:
                fingerprint["defenses"] = _defenses_record(keys)
            with Journal(out, fingerprint) as journal:
                todo = [(p, s) for p in prompts for s in range(config.n) if (p.id, s) not in journal]
                seconds = _generate(backend, todo, journal, verify, teacher, config, len(prompts), progress)
                rows = [journal.rows[(p.id, s)] for p in prompts for s in range(config.n)]
        finally:
            close()
        return _finish(out, rows, prompts, config, teacher, seconds, keys)


def _prepare(out: Path, overwrite: bool) -> None:
    """With --overwrite, delete what a generation wrote — and refuse a folder that holds anything else, which is
    the user's, not ours to delete. Called under the folder's lock, so a running generation is never wiped."""
    if not overwrite:
        return
    ours = {JOURNAL, RUN, SAMPLES, TRAIN, MANIFEST}
    ours |= {temporary_name(n) for n in ours} | {f"{n}.tmp" for n in ours}  # write_jsonl's and write_json's
    clear_owned(out, lambda name: name in ours, lambda foreign: DataError(
        f"generate.output: {out} holds files a generation did not write ({', '.join(foreign[:5])}); --overwrite "
        "deletes only a generation's own files: choose an empty or new folder"))


def _keyfile(recipe: Recipe | GenerationRecipe) -> Any:
    """The recipe's defense key file, read and checked (one line when malformed), or None."""
    config = recipe.generate
    assert config is not None
    if config.defenses is None:
        return None
    if recipe.teacher is not None and getattr(recipe.teacher, "api", None) is not None:
        raise RecipeError("generate.defenses: an API teacher serves its own defenses (`distill serve --defenses`); "
                          "the key file applies to a local teacher.model only")
    from distill.defenses.keys import load_keyfile

    return load_keyfile(config.defenses)


def _defenses_record(keys: Any) -> dict[str, Any]:
    """What provenance says of the defenses: the public view and a one-way hash of the key file."""
    from distill.defenses.build import keyfile_sha256

    return {"public": keys.public_view(), "keyfile_sha256": keyfile_sha256(keys)}


def _backend(recipe: Recipe | GenerationRecipe, config: Any, keys: Any = None) -> tuple[Any, dict[str, Any], Any, Any]:
    """The backend, the teacher's identity for provenance, what decides how prompts become tokens (the tokenizer
    for a local teacher; the server's own for an API), and what closes the backend. An API's address is provenance,
    not identity: a server that moves to another port or host is the same teacher, so a resume still works.
    `config` is the recipe's `generate` with the defenses' forced temperature already in its sampling."""
    teacher = recipe.teacher
    assert teacher is not None
    api = getattr(teacher, "api", None)
    if api is not None:
        from distill.teachers.api import ApiClient

        client = ApiClient(api)
        identity = {"api": client.config.base_url, "model": api.model}
        return ApiBackend(client, api.model, config.sampling), identity, "the server's", client.close
    if teacher.model is None:
        raise RecipeError("teacher.model: `distill generate` needs a model to run (or `teacher.api`); a teacher "
                          "cache holds scores of existing text, not a model that writes")
    import torch

    from distill.data.identity import tokenizer_identity
    from distill.generation.engine import Engine
    from distill.models import load_teacher, load_tokenizer
    from distill.teachers.cache.fingerprint import weights_sha256

    source, revision, trust = recipe.tokenizer_options()
    tokenizer = load_tokenizer("tokenizer", source, revision, trust)
    model = load_teacher(teacher)
    identity = {"model": teacher.model, "revision": teacher.revision, "dtype": teacher.dtype,
                "weights_sha256": weights_sha256(model)}
    if torch.cuda.is_available():  # a row's text is the same on either; only the speed differs
        model.to("cuda")
    processors = []
    if keys is not None:
        from distill.defenses.build import build_defenses

        processors = build_defenses(keys, model, tokenizer).processors
    engine = Engine(model, tokenizer, max_batch_size=config.batch_size, logits_processors=processors)
    rendering = tokenizer_identity(tokenizer)["sha256"]
    return LocalBackend(engine, config.sampling, config.batch_size), identity, rendering, lambda: None


def _generate(backend: Any, todo: list[tuple[Prompt, int]], journal: Journal, verify: Any, teacher: dict[str, Any],
              config: Any, n_prompts: int, progress: bool) -> float:
    total = n_prompts * config.n
    done = total - len(todo)
    accepted = sum(bool(r["accepted"]) for r in journal.rows.values())
    tokens, start = 0, time.perf_counter()
    with progress_display("generating", "{rate}", "{speed}", disable=not progress) as bar:
        job = bar.add_task("generating", total=total, completed=done, rate="", speed="")

        def on_done(finished: list[tuple[Prompt, int, Completion]]) -> None:
            nonlocal accepted, tokens, done
            rows = [_row(p, s, c, verify, teacher, config) for p, s, c in finished]
            journal.append(rows)
            accepted += sum(r["accepted"] for r in rows)
            tokens += sum(c.completion_tokens for _, _, c in finished)
            done += len(rows)
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.update(job, completed=done, rate=f"accepted {accepted / max(done, 1):.0%}",
                       speed=f"{tokens / elapsed:.0f} tok/s")

        backend.run(todo, on_done)
    return time.perf_counter() - start


def _row(prompt: Prompt, sample: int, completion: Completion, verify: Any, teacher: dict[str, Any],
         config: Any) -> dict[str, Any]:
    verdict: Verdict | None = verify(prompt.record, completion.text) if verify is not None else None
    return {**prompt.training_row(completion.text), "prompt_id": prompt.id, "sample": sample,
            "accepted": verdict.accepted if verdict is not None else True,
            "verdict": None if verdict is None else {"accepted": verdict.accepted, "score": verdict.score,
                                                     "extracted": verdict.extracted, "reason": verdict.reason},
            "finish_reason": completion.finish_reason,
            "tokens": {"prompt": completion.prompt_tokens, "completion": completion.completion_tokens},
            "teacher": teacher, "sampling": config.sampling.model_dump(mode="json")}


def _prompts_digest(prompts: list[Prompt]) -> str:
    from distill.data.identity import sha256_json

    return sha256_json([[p.messages, p.text] for p in prompts])


def _finish(out: Path, rows: list[dict[str, Any]], prompts: list[Prompt], config: Any, teacher: dict[str, Any],
            seconds: float, keys: Any = None) -> dict[str, Any]:
    kept, counts = select(rows, config)
    write_jsonl(out / SAMPLES, rows)
    write_jsonl(out / TRAIN, kept)
    finish: dict[str, int] = {}
    for row in rows:
        finish[row["finish_reason"]] = finish.get(row["finish_reason"], 0) + 1
    manifest = {
        "version": MANIFEST_VERSION, "kind": "generation", "files": {"train": TRAIN, "samples": SAMPLES,
                                                                     "journal": JOURNAL, "run": RUN},
        "counts": {"prompts": len(prompts), "samples_per_prompt": config.n, **counts}, **rates(rows, len(prompts),
                                                                                             config.n),
        "finish_reasons": finish,
        "tokens": {"prompt": sum(r["tokens"]["prompt"] for r in rows),
                   "completion": sum(r["tokens"]["completion"] for r in rows)},
        "seconds_this_run": seconds, "teacher": teacher, "generate": config.model_dump(mode="json"),
        "provenance": provenance(),
    }
    if keys is not None:
        manifest["defenses"] = _defenses_record(keys)
    write_json(out / MANIFEST, manifest)
    return manifest
