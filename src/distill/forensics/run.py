"""`distill audit SUSPECT --against KEYFILE`: check the inputs, load the suspect once, run each test the key file and
the options allow, and assemble one `AuditResult` (audit.json).

Everything that can be wrong with the inputs (key file, missing sections, files) is checked before a model is
loaded, so a mistake is one line, not a traceback after minutes of generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.defenses.keys import KeyFile, KeyFileError, load_keyfile
from distill.defenses.watermark import GreenList
from distill.errors import DataError
from distill.forensics import blocks, detector, radioactivity
from distill.forensics.canaries import ESTIMATOR, exposure, response_logliks
from distill.forensics.fingerprint import CAVEAT, distance, doc_distances, sign_flip_test
from distill.forensics.texts import Formatting, prompt_ids, read_prompts, read_texts
from distill.results.audit import AuditResult, load_calibration
from distill.results.provenance import provenance


@dataclass
class AuditOptions:
    suspect: str
    keyfile: Path
    prompts: str | None = None  # closed mode
    watermarked: str | None = None  # open mode, and the frequency filter
    teacher: str | None = None  # fingerprint
    references: list[str] = field(default_factory=list)
    documents: str | None = None
    formatting: Formatting = "chat"
    system: str | None = None
    samples: int = 1
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    filter_top: int | None = None
    no_dedup_control: bool = False
    canaries: bool = True
    max_candidates: int = 2_000
    n_permutations: int = 10_000
    max_texts: int | None = None
    max_length: int = 256
    batch_size: int = 8
    seed: int = 0
    calibration: Path | None = None


@dataclass
class Loaded:
    name: str
    path: str
    model: Any
    tokenizer: Any

    @property
    def n_tokens(self) -> int:
        return len(self.tokenizer)


def check_inputs(opts: AuditOptions) -> KeyFile:
    """Everything checkable without a model; returns the key file."""
    keys = load_keyfile(opts.keyfile)
    if (opts.prompts or opts.watermarked) and keys.watermark is None:
        raise KeyFileError(f"{opts.keyfile}: watermark: missing; --prompts and --watermarked test the watermark, "
                           "and this key file has none")
    if opts.filter_top is not None and not opts.watermarked:
        raise DataError("--filter-top needs --watermarked: the filter is built from the teacher's watermarked text")
    fingerprint = [opts.teacher, opts.documents, opts.references]
    if any(fingerprint) and not all(fingerprint):
        raise DataError("the fingerprint test needs all of --teacher, --documents and at least one --reference")
    runs_canaries = opts.canaries and keys.canaries is not None
    if not (opts.prompts or opts.watermarked or runs_canaries or opts.teacher):
        raise DataError(f"nothing to audit: give --prompts (closed mode) or --watermarked (open mode) for the "
                        f"watermark, or --teacher/--documents/--reference for the fingerprint; {opts.keyfile} has "
                        f"{'no canaries' if keys.canaries is None else 'canaries, but --no-canaries was given'}")
    for option, value in (("--samples", opts.samples), ("--max-length", opts.max_length - 1),
                          ("--max-candidates", opts.max_candidates), ("--permutations", opts.n_permutations)):
        if value < 1:
            raise DataError(f"{option} is too small")
    return keys


def load(name: str, arg: str) -> Loaded:
    from distill.eval.cli_support import parse_model
    from distill.eval.suite import load_model
    from distill.models import check_logit_width, load_tokenizer, output_width

    entry, _ = parse_model(arg)
    tokenizer = load_tokenizer(name, entry.path)
    model = load_model(name, entry.path)
    check_logit_width(f"{name} ({entry.path})", output_width(model), len(tokenizer))
    return Loaded(entry.name, entry.path, model, tokenizer)


def run_audit(opts: AuditOptions, echo: Any = print) -> AuditResult:
    keys = check_inputs(opts)
    calibration = load_calibration(opts.calibration) if opts.calibration else None
    suspect = load("suspect", opts.suspect)
    result: dict[str, Any] = {"provenance": provenance(), "suspect": suspect.path, "keyfile": str(opts.keyfile),
                              "key_public": keys.public_view(), "watermark": [], "notes": []}
    if keys.watermark and (opts.prompts or opts.watermarked):
        result["watermark"] = watermark_tests(opts, keys, suspect, echo)
    if opts.canaries and keys.canaries is not None:
        echo(f"canaries: ranking {len(keys.canaries.items)} secrets among {keys.canaries.space.size:,} candidates")
        result["canaries"] = canary_test(opts, keys, suspect)
    if opts.teacher:
        result["fingerprint"] = fingerprint_test(opts, suspect, echo)
    if calibration is not None:
        result["calibration"] = calibration.to_json()
    return AuditResult.for_writing(result)


def watermark_tests(opts: AuditOptions, keys: KeyFile, suspect: Loaded, echo: Any) -> list[dict[str, Any]]:
    assert keys.watermark is not None
    key = keys.watermark
    green = GreenList(key.secret, key.context_width, key.gamma)
    h = key.context_width
    teacher_docs: list[list[int]] = []
    if opts.watermarked:
        texts = read_texts(opts.watermarked, "--watermarked", opts.max_texts)
        teacher_docs = radioactivity.tokenize_documents(texts, suspect.tokenizer, opts.max_length)
    wfilter = detector.window_filter(teacher_docs, h, opts.filter_top) if opts.filter_top else None
    common = {"key": key, "filter_top": opts.filter_top, "filter_windows": len(wfilter) if wfilter else None}
    out = []
    runs: list[tuple[str, list[detector.Stream], str | None, int, dict[str, Any]]] = []
    if opts.prompts:
        from distill.generation.engine import Engine

        prompts = read_prompts(opts.prompts, "--prompts", opts.max_texts)
        ids = [prompt_ids(p, suspect.tokenizer, opts.formatting, opts.system) for p in prompts]
        echo(f"watermark (closed mode): sampling the suspect on {len(ids)} prompts × {opts.samples}")
        engine = Engine(suspect.model, suspect.tokenizer, max_batch_size=opts.batch_size)
        streams, generated = radioactivity.closed_streams(
            engine, ids, green, samples=opts.samples, temperature=opts.temperature, top_p=opts.top_p,
            max_new_tokens=opts.max_new_tokens, seed=opts.seed)
        settings = {"samples": opts.samples, "temperature": opts.temperature, "top_p": opts.top_p,
                    "max_new_tokens": opts.max_new_tokens, "seed": opts.seed, "formatting": opts.formatting,
                    "tokens_generated": generated}
        runs.append(("closed", streams, opts.prompts, len(streams), settings))
    if teacher_docs:
        echo(f"watermark (open mode): the suspect reads {len(teacher_docs)} watermarked texts")
        preds = radioactivity.top1_predictions(suspect.model, teacher_docs, n_tokens=suspect.n_tokens,
                                               batch_size=opts.batch_size, pad_id=suspect.tokenizer.pad_token_id or 0)
        streams = radioactivity.open_streams(teacher_docs, preds, h)
        runs.append(("open", streams, opts.watermarked, len(teacher_docs), {"max_length": opts.max_length}))
    for mode, streams, source, n_texts, settings in runs:
        for dedup in (True, False) if opts.no_dedup_control else (True,):
            scored = detector.score(green, streams, dedup=dedup, window_filter=wfilter)
            out.append(blocks.watermark_block(mode, scored, dedup=dedup, source=source, n_texts=n_texts,
                                              settings=settings, **common))
    return out


def canary_test(opts: AuditOptions, keys: KeyFile, suspect: Loaded) -> dict[str, Any]:
    from distill.generation.engine import Engine, GenRequest
    from distill.generation.sampling import SamplingParams

    assert keys.canaries is not None
    space = keys.canaries.space
    engine = Engine(suspect.model, suspect.tokenizer, max_batch_size=opts.batch_size)
    items = []
    for i, canary in enumerate(keys.canaries.items):
        prompt = prompt_ids(canary.trigger, suspect.tokenizer, opts.formatting, opts.system)

        def score(responses: list[str], prompt: list[int] = prompt) -> list[float]:
            return response_logliks(suspect.model, suspect.tokenizer, prompt, responses, n_tokens=suspect.n_tokens,
                                    batch_size=max(opts.batch_size, 32))

        found = exposure(space, canary.secret, score, max_candidates=opts.max_candidates, seed=opts.seed)
        budget = len(suspect.tokenizer(space.response(canary.secret), add_special_tokens=False)["input_ids"]) + 8
        greedy = engine.generate([GenRequest(prompt, SamplingParams(temperature=0, max_new_tokens=budget),
                                             (opts.seed, i))])[0]
        items.append(blocks.canary_item(i, canary.trigger, found, canary.secret in greedy.text, space.size))
    extracted = sum(item["extracted"] for item in items)
    sampled = any(item["rank_method"] == "sampled" for item in items)
    return {"space_size": space.size, "formatting": opts.formatting, "max_candidates": opts.max_candidates,
            "estimator": ESTIMATOR if sampled else None, "seed": opts.seed, "n": len(items), "extracted": extracted,
            "extraction_rate": extracted / len(items), "mean_exposure": float(np.mean([i["exposure"] for i in items])),
            "items": items, "combined": blocks.canary_combined(items)}


def fingerprint_test(opts: AuditOptions, suspect: Loaded, echo: Any) -> dict[str, Any]:
    from distill.models import check_same_vocab

    assert opts.teacher and opts.documents
    teacher = load("teacher", opts.teacher)
    refs = [load(f"reference {r}", r) for r in opts.references]
    names = [suspect.name, teacher.name, *(r.name for r in refs)]
    if len(set(names)) != len(names):
        raise DataError(f"two models share a name in {names}; name them with NAME=FOLDER")
    for other in (teacher, *refs):
        check_same_vocab(suspect.tokenizer, other.tokenizer)
    texts = read_texts(opts.documents, "--documents", opts.max_texts)
    docs = [d for d in suspect.tokenizer(texts, add_special_tokens=True)["input_ids"] if len(d) >= 2]
    docs = [d[:opts.max_length] for d in docs]
    echo(f"fingerprint: {len(names)} models on {len(docs)} documents")
    models = {m.name: m.model for m in (teacher, suspect, *refs)}
    dist = doc_distances(models, teacher.name, docs, n_tokens=suspect.n_tokens,
                         pad_id=suspect.tokenizer.pad_token_id or 0, batch_size=opts.batch_size)
    n_tokens = int(dist[suspect.name].tokens.sum())
    comparisons, method = [], "exact"
    for ref in refs:
        for metric in ("agreement", "kl_forward"):
            diffs = distance(dist[ref.name], metric) - distance(dist[suspect.name], metric)
            test = sign_flip_test(diffs, n_permutations=opts.n_permutations, seed=opts.seed)
            method = test.method
            comparisons.append(blocks.fingerprint_comparison(
                ref.name, metric, float(getattr(dist[suspect.name], metric).mean()),
                float(getattr(dist[ref.name], metric).mean()), test, len(docs), n_tokens))
    return {"teacher": teacher.path, "documents": opts.documents, "n_docs": len(docs), "n_tokens": n_tokens,
            "n_permutations": opts.n_permutations, "method": method, "seed": opts.seed,
            "models": {n: {"agreement": float(d.agreement.mean()), "kl_forward": float(d.kl_forward.mean())}
                       for n, d in dist.items()},
            "paths": {m.name: m.path for m in (suspect, teacher, *refs)}, "comparisons": comparisons,
            "caveat": CAVEAT}
