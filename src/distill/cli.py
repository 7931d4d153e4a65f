"""The `distill` command: a CLI of verbs. Errors from user input print one line and exit 2 (no traceback unless
--debug); failures during training exit 1."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from distill.errors import DistillError
from distill.results.layout import EVAL

app = typer.Typer(
    help="Knowledge distillation: turn a large teacher into a small, fast student.\n\n"
    "Examples:\n\n  distill check examples/recipes/tiny.yaml\n\n  distill train examples/recipes/tiny.yaml\n\n"
    "  distill train examples/recipes/tiny.yaml --set training.lr=1e-3 --overwrite\n\n"
    "  distill train examples/recipes/tiny.yaml --resume\n\n"
    "  accelerate launch -q --cpu --num_processes 2 -m distill train examples/recipes/tiny.yaml\n\n"
    "  distill generate examples/recipes/generate-arithmetic.yaml\n\n"
    "  distill serve builtin:smollm2-135m-instruct",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a field: --set training.lr=1e-4 (repeatable).")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]


@contextmanager
def _reported(debug: bool) -> Iterator[None]:
    """Turn DistillError into one line on stderr and its exit code."""
    try:
        yield
    except DistillError as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())
        sys.stderr.write(f"error: {message}\n")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130) from None


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.command()
def train(recipe: RecipeArg, set_: SetOpt = None, resume: Annotated[bool, typer.Option(
    "--resume", help="Continue from the newest checkpoint in training.output_dir.")] = False,
          overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete an existing run in output_dir.")] = False,
          debug: DebugOpt = False) -> None:
    """Train a student as the recipe says; writes the run folder (checkpoints, metrics, student/)."""
    with _reported(debug):
        from distill.recipe import load_recipe

        loaded = load_recipe(recipe, set_ or [])
        from distill.training.cpu_launch import maybe_relaunch

        maybe_relaunch()  # under `accelerate launch --cpu --num_processes N`: start the N workers, once it is valid
        _quiet_libraries()
        from distill.training.loop import train as run_training

        run_training(loaded, resume=resume, overwrite=overwrite)


@app.command()
def cache(
    recipe: RecipeArg,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Cache folder (default: the recipe's teacher.cache).", show_default=False)] = None,
    encoding: Annotated[str, typer.Option(
        "--encoding", help="q8: quantised values, ~118 bytes/token at k=64; exact: float32 values (~3x larger); "
        "counts: a sampled cache's ids and counts with the teacher's entropy, no values (proposal t=1, count "
        "weights; the smallest).")
    ] = "q8",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Sequences per teacher forward pass (a local teacher.model; an API teacher "
        "takes teacher.api.max_concurrency requests at a time).")] = 8,
    shard_tokens: Annotated[int, typer.Option(
        "--shard-tokens", min=1, help="Tokens per shard (the unit of work split across processes).")] = 1 << 18,
    planned_only: Annotated[bool, typer.Option(
        "--planned-only", help="Only the examples the recipe's own training run visits (its seed, batch, steps).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete whatever is in --out first.")] = False,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run the recipe's teacher once over its training data and store the top-k log-probs (k = teacher.top_k, at
    teacher.capture_temperature), or tokens drawn from it (teacher.cache_scheme: sampled), with a manifest; train
    from it with `teacher: {cache: DIR}`. Run it again after a kill to continue. Under `accelerate launch` the
    shards are split across processes.

    With `teacher: {api: ...}` it harvests an OpenAI-compatible endpoint instead (echo-scoring each sequence through
    /v1/completions; docs/api.md): distill cache recipe.yaml --out runs/harvest"""
    with _reported(debug):
        from distill.recipe import load_recipe

        loaded = load_recipe(recipe, set_ or [])
        target = out or (Path(loaded.teacher.cache) if loaded.teacher and loaded.teacher.cache else None)
        if target is None:
            raise typer.BadParameter("give --out DIR (or set teacher.cache in the recipe)")
        from distill.training.cpu_launch import maybe_relaunch

        maybe_relaunch()
        _quiet_libraries()
        from distill.teachers.cache.build import build_cache

        manifest = build_cache(loaded, target, encoding=encoding, batch_size=batch_size, shard_tokens=shard_tokens,
                               planned_only=planned_only, overwrite=overwrite)
        if manifest:
            from distill.teachers.cache.store import describe_scheme

            typer.echo(f"cache: {target} — {manifest['n_tokens']:,} tokens, {describe_scheme(manifest)}, "
                       f"{manifest['bytes_per_token']:.1f} bytes/token, teacher mass captured "
                       f"{manifest['captured_mass_mean']:.1%}")


@app.command()
def generate(
    recipe: RecipeArg,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Delete the generation in generate.output and start again (a folder holding anything "
        "else is refused).")] = False,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Have the teacher (teacher.model, or an OpenAI-compatible teacher.api) write generate.n completions per
    prompt, judge each with generate.verifier and keep the accepted, distinct ones as training data
    (generate.output/train.jsonl, with samples.jsonl and manifest.json). Run it again after a kill to continue.

    Example: distill generate examples/recipes/reasoning.yaml --set generate.n=8"""
    with _reported(debug):
        from distill.recipe.loading import load_generation_recipe

        loaded = load_generation_recipe(recipe, set_ or [])
        _quiet_libraries()
        from distill.generation.run import run_generation

        m = run_generation(loaded, overwrite=overwrite, progress=True)
        c, n, passed = m["counts"], m["counts"]["samples_per_prompt"], m["pass_at_k"]
        out = Path(loaded.generate.output) if loaded.generate else Path()
        typer.echo(f"generate: {c['samples']:,} samples of {c['prompts']:,} prompts; accepted "
                   f"{m['acceptance_rate']:.1%} (pass@1 {passed['1']:.3f}, pass@{n} {passed[str(n)]:.3f}); kept "
                   f"{c['kept']:,} → {out / 'train.jsonl'}")


@app.command()
def demo(
    kind: Annotated[str, typer.Argument(
        help="`text` (default): logit KD on Shakespeare. `reasoning`: the DeepSeek-R1 recipe, the teacher's verified "
        "step-by-step solutions as training data (docs/reasoning.md).")] = "text",
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (report.html, report.md, summary.json, runs; "
                                             "default runs/demo, for `reasoning` runs/reasoning).")] = None,
    minutes: Annotated[float | None, typer.Option(
        "--minutes", help="Size the training steps to this whole-demo budget, from a short speed probe (reasoning: "
        "problems, steps and held-out problems scaled from its 20-minute default).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps per student (default 32; reasoning "
                                              "16).")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher: builtin alias, folder or hub id.")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Teacher layers to copy, e.g. 0,6,12,24,29.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Training text (default builtin:shakespeare).")] = None,
    heldout: Annotated[str | None, typer.Option("--heldout", help="Held-out text to evaluate on.")] = None,
    alpha: Annotated[float | None, typer.Option(
        "--alpha", help="The KD student's cross-entropy weight (default 0: pure distillation).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate of both students (5e-4).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="reasoning: a smoke run of a few minutes.")] = False,
    kd: Annotated[bool, typer.Option("--kd", help="reasoning: add the arm verified samples + logit KD.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Distil SmolLM2-135M-Instruct into a 6-layer copy, against a no-distillation baseline, and report honestly.

    `distill demo reasoning`: the DeepSeek-R1 recipe in ~20 minutes (the teacher's verified solutions → SFT of a
    copied student, against unverified ones), e.g. distill demo reasoning --minutes 10"""
    with _reported(debug):
        _quiet_libraries()
        if kind == "reasoning":
            from distill.demo.reasoning import run_reasoning_demo
            from distill.demo.reasoning_plan import options_from_cli

            run_reasoning_demo(options_from_cli(out=out, minutes=minutes, steps=steps, teacher=teacher, layers=layers,
                                                lr=lr, quick=quick, kd=kd, data=data, heldout=heldout, alpha=alpha))
            return
        if kind != "text" or quick or kd:
            from distill.errors import DataError

            raise DataError(f"demo: unknown kind {kind!r}; use `text` or `reasoning`" if kind != "text" else
                            "demo: --quick and --kd are options of `distill demo reasoning`")
        from distill.demo.pipeline import run_demo, sized_options

        options = sized_options(out=out or Path("runs/demo"), minutes=minutes, steps=steps, teacher=teacher,
                                layers=layers, data=data, heldout=heldout, alpha=alpha, lr=lr)
        run_demo(options)


@app.command("eval")
def evaluate(
    models: Annotated[list[str], typer.Argument(
        help="Models to compare: a folder, NAME=FOLDER, or a training run folder (its student; its teacher becomes "
        "the reference).", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="Held-out data: .jsonl/.parquet/folder/builtin:NAME/SPLIT.")],
    data_format: Annotated[str, typer.Option(
        "--format", help="Record format: auto (from the first record), text (every token scored), prompt_completion "
        "(completion tokens scored) or messages (assistant turns scored, rendered with the chat template).")
    ] = "auto",
    chat_template: Annotated[str | None, typer.Option(
        "--chat-template", help="Chat template (Jinja, or a file) for `messages` data instead of the first "
        "model's own.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the result JSON.")] = Path(EVAL),
    reference: Annotated[str | None, typer.Option(
        "--reference", help="Teacher to measure agreement/KL against: FOLDER or NAME=FOLDER.")] = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", help="Name of the no-distillation baseline among the models (paired differences, gap).")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Field holding the text.")] = "text",
    slice_by: Annotated[list[str] | None, typer.Option("--slice-by", help="Field to break metrics down by.")] = None,
    max_docs: Annotated[int | None, typer.Option("--max-docs", help="Evaluate a spread sample of N documents.")] = None,
    train_data: Annotated[str | None, typer.Option(
        "--train-data", help="Training data for the n-gram contamination check (default: the run's data).")] = None,
    task: Annotated[list[str] | None, typer.Option(
        "--task", help="Verifiable task: built-in (gsm_symbolic, basic_arithmetic, chain_sum) or a task YAML.")] = None,
    task_n: Annotated[int, typer.Option("--task-n", help="Items per task.")] = 20,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per document (longer are cut).")] = 512,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling documents and bootstrap resamples.")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Compare models on held-out data: NLL/perplexity, agreement and KL with the teacher, calibration, speed, size,
    task accuracy — each with a 95% bootstrap CI over documents — plus slices and a contamination check.

    Example: distill eval runs/demo/kd runs/demo/baseline --baseline baseline --data builtin:shakespeare/heldout
    """
    with _reported(debug):
        _quiet_libraries()
        from distill.errors import DataError
        from distill.eval.cli_support import build_suite, check_output_path
        from distill.eval.suite import run_suite
        from distill.results.io import write_result

        check_output_path(out)  # before the slow part, not after it
        suite = build_suite(models, data=data, reference=reference, baseline=baseline, text_field=text_field,
                            slice_by=slice_by or [], max_docs=max_docs, train_data=train_data, tasks=task or [],
                            task_n=task_n, max_length=max_length, seed=seed, fmt=data_format,
                            chat_template=chat_template)
        result = run_suite(suite)
        from distill.eval.summary_table import print_summary

        print_summary(result)  # first: should the write still fail, the numbers have been seen
        try:
            write_result(out, result)
        except OSError as exc:  # the path was writable before the evaluation; say what happened in one line
            raise DataError(f"--out {out}: could not write the result ({exc.strerror or exc}); choose a writable "
                            "path and run again") from exc
        typer.echo(f"results: {out}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(
        help="Folder holding summary.json (a demo run) or eval.json (`distill eval --out DIR/eval.json`), a "
        "training run folder (its curves, validation and recipe), or the result file itself.", show_default=False)],
    debug: DebugOpt = False,
) -> None:
    """Render report.html (self-contained, images embedded) and report.md from a run's result files, next to them.
    An eval.json written into a training run folder is shown with that run's training; elsewhere it holds no
    training facts, and the training section is left out."""
    with _reported(debug):
        from distill.report.render import write_report

        html, md = write_report(run_dir)
        typer.echo(f"report: {html}\nmarkdown: {md}")


@app.command()
def audit(
    suspect: Annotated[str, typer.Argument(help="The suspect model: a folder, NAME=FOLDER, a training run or "
                                           "builtin:NAME.", show_default=False)],
    against: Annotated[Path, typer.Option("--against", help="The defense key file the teacher served with.",
                                          show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Where to write the result JSON.")] = Path("audit.json"),
    prompts: Annotated[str | None, typer.Option("--prompts", help="Closed mode: prompts (JSONL: messages, prompt "
                                                "or text) the suspect answers; its output is scored.")] = None,
    watermarked: Annotated[str | None, typer.Option(
        "--watermarked", help="Open mode: the teacher's watermarked texts (JSONL of text, or a `distill generate` "
        "samples/train file); the suspect's top-1 predictions on them are scored.")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="Fingerprint: the teacher model.")] = None,
    reference: Annotated[list[str] | None, typer.Option(
        "--reference", help="Fingerprint: a model the suspect was not distilled from (repeatable).")] = None,
    documents: Annotated[str | None, typer.Option("--documents", help="Fingerprint: documents (JSONL).")] = None,
    formatting: Annotated[str, typer.Option("--format", help="How prompts and canary triggers were served: chat "
                                            "(the tokenizer's template) or plain.")] = "chat",
    system: Annotated[str | None, typer.Option("--system", help="System prompt the teacher served with.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Closed mode: generations per prompt.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Closed mode: tokens per generation.")
                              ] = 128,
    temperature: Annotated[float, typer.Option("--temperature", help="Closed mode: sampling temperature.")] = 0.8,
    filter_top: Annotated[int | None, typer.Option(
        "--filter-top", help="Score only windows among the N most frequent in the watermarked text.")] = None,
    no_dedup_control: Annotated[bool, typer.Option(
        "--no-dedup-control", help="Also score without de-duplication (a negative control, marked invalid).")
                                ] = False,
    canaries: Annotated[bool, typer.Option("--canaries/--no-canaries", help="Test the key file's canaries.")] = True,
    max_candidates: Annotated[int, typer.Option(
        "--max-candidates", help="Exact canary rank up to this many candidates, else a sample of this size.")
                              ] = 2_000,
    permutations: Annotated[int, typer.Option("--permutations", help="Fingerprint: sign-flip permutations.")
                            ] = 10_000,
    max_texts: Annotated[int | None, typer.Option("--max-texts", help="Read at most N records of each file.")
                         ] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per document (longer are cut).")] = 256,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="Null calibration from bench/audit_null.py, shown with its QQ plot.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling, candidate samples and permutations.")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Test a suspect model for signs that it learned from the teacher: watermark radioactivity, canary exposure,
    output fingerprint. Writes audit.json; `distill report` renders it. See docs/audit.md.

    Example: distill audit runs/thief/student --against keys.yaml --watermarked gen/train.jsonl --out audit.json
    """
    with _reported(debug):
        from distill.errors import DataError
        from distill.eval.cli_support import check_output_path

        if formatting not in ("chat", "plain"):
            raise DataError(f"--format {formatting!r}: use chat or plain")
        from distill.forensics.run import AuditOptions, check_inputs

        options = AuditOptions(
            suspect=suspect, keyfile=against, prompts=prompts, watermarked=watermarked, teacher=teacher,
            references=reference or [], documents=documents, formatting=formatting,  # type: ignore[arg-type]
            system=system, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
            filter_top=filter_top, no_dedup_control=no_dedup_control, canaries=canaries,
            max_candidates=max_candidates, n_permutations=permutations, max_texts=max_texts, max_length=max_length,
            seed=seed, calibration=calibration)
        check_inputs(options)  # the key file and options, before any model is loaded
        check_output_path(out)
        _quiet_libraries()
        from distill.forensics.run import run_audit
        from distill.results.audit import write_audit

        result = run_audit(options, echo=typer.echo)
        write_audit(out, result)
        typer.echo(f"audit: {out}")


@app.command()
def check(recipe: RecipeArg, set_: SetOpt = None, num_processes: Annotated[int, typer.Option(
    "--num-processes", min=1, help="Processes the run will use (`accelerate launch --num_processes`): the batch must "
    "split into micro-batches over all of them.")] = 1, debug: DebugOpt = False) -> None:
    """Validate a recipe, load its tokenizers and model configs, tokenize its data; report every problem."""
    with _reported(debug):
        from distill.recipe import load_recipe

        loaded = load_recipe(recipe, set_ or [])
        _quiet_libraries()
        from distill.check import check_recipe

        report = check_recipe(loaded, processes=num_processes)
        for key, value in report.facts.items():
            typer.echo(f"{key:>10}: {value}")
        if report.problems:
            for problem in report.problems:
                sys.stderr.write(f"error: {' '.join(problem.split())}\n")
            raise typer.Exit(2)
        typer.echo("ok: the recipe is ready to train")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="A hub id, a local folder, or builtin:NAME.", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Address to listen on; beyond loopback needs --api-key-env.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        "--api-key-env", help="Name of the environment variable holding the key clients must send as `Authorization: "
        "Bearer KEY` (never the key itself).", show_default=False)] = None,
    model_name: Annotated[str | None, typer.Option(
        "--model-name", help="The `model` clients send (default: MODEL as given).", show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[str, typer.Option("--device", help="auto (cuda when there is one), cpu, cuda, cuda:1 …")
                      ] = "auto",
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Rows per engine batch.")] = 16,
    batch_window_ms: Annotated[float, typer.Option(
        "--batch-window-ms", min=0, help="A batch takes requests arriving less than this apart (≤ 10×).")] = 5.0,
    max_tokens_limit: Annotated[int, typer.Option(
        "--max-tokens-limit", min=1, help="Largest max_tokens / max_completion_tokens per choice.")] = 2048,
    max_n: Annotated[int, typer.Option("--max-n", min=1, help="Largest n.")] = 16,
    max_choices: Annotated[int, typer.Option("--max-choices", min=1, help="Largest prompts × n per request.")] = 64,
    max_logprobs: Annotated[int, typer.Option("--max-logprobs", min=0, help="Largest logprobs / top_logprobs.")] = 20,
    max_prompt_tokens: Annotated[int | None, typer.Option(
        "--max-prompt-tokens", min=1, help="Longest prompt in tokens (default: the model's context window).",
        show_default=False)] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1, help="Largest request body.")] = 1 << 20,
    request_timeout: Annotated[float, typer.Option(
        "--request-timeout", min=0.001, help="Seconds a request may wait and run before it is answered 504.")] = 600.0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's: warning, info (access log), debug.")
                         ] = "info",
    defenses: Annotated[Path | None, typer.Option(
        "--defenses", help="A defense key file (`distill defenses keygen`): watermark, canaries, product of experts, "
        "antidistillation, exposure controls. See docs/defenses.md.", show_default=False)] = None,
    debug: DebugOpt = False,
) -> None:
    """Serve a causal LM over an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models), with
    concurrent requests batched together. See docs/serve.md.

    Example: DISTILL_API_KEY=… distill serve builtin:smollm2-135m-instruct --host 0.0.0.0 --api-key-env DISTILL_API_KEY
    """
    with _reported(debug):
        from distill.serving import ServeConfig, ServeLimits, read_api_key

        read_api_key(api_key_env, host)  # a refused address or key: one line before anything heavy is imported
        _quiet_libraries()
        from distill.serving.launch import serve_model

        limits = ServeLimits(max_body_bytes=max_body_bytes, max_tokens=max_tokens_limit, max_n=max_n,
                             max_choices=max_choices, max_logprobs=max_logprobs, max_prompt_tokens=max_prompt_tokens,
                             request_timeout_s=request_timeout)
        config = ServeConfig(model_name=model_name or model, limits=limits, max_batch_size=max_batch_size,
                             batch_window_s=batch_window_ms / 1000)
        serve_model(model, config, host=host, port=port, api_key_env=api_key_env, dtype=dtype, device=device,
                    log_level=log_level, echo=typer.echo, defenses=defenses)


defenses_app = typer.Typer(help="Serve-time defenses against distillation: key files and the antidistillation "
                            "gradient (docs/defenses.md).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(defenses_app, name="defenses")


@defenses_app.command("keygen")
def defenses_keygen(
    out: Annotated[Path, typer.Argument(help="Key file to write (.yaml/.yml, else JSON); owner-only permissions.",
                                        show_default=False)],
    canaries: Annotated[int, typer.Option("--canaries", min=0, help="Canary trigger/secret pairs (0: none).")] = 8,
    gamma: Annotated[float, typer.Option("--gamma", help="Watermark green share γ (0 < γ < 1).")] = 0.25,
    delta: Annotated[float, typer.Option("--delta", help="Watermark logit bias δ (≥ 0).")] = 2.0,
    context_width: Annotated[int, typer.Option("--context-width", min=1, max=8, help="Watermark window h (tokens).")
                             ] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a fresh key file with random secrets (a watermark key and canaries). Keep it private: it is what an
    audit needs and what a thief must not have. Add poe/antidistillation/exposure sections by hand."""
    with _reported(debug):
        from pydantic import ValidationError

        from distill.defenses.keys import KeyFileError, new_keyfile, write_keyfile

        if out.exists() and not overwrite:
            raise KeyFileError(f"{out} exists; choose another path or pass --overwrite")
        try:
            keys = new_keyfile(canaries=canaries, gamma=gamma, delta=delta, context_width=context_width)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise KeyFileError(f"--{'-'.join(str(err['loc'][-1]).split('_'))}: {err['msg']}") from None
        write_keyfile(keys, out)
        typer.echo(f"key file: {out} — {', '.join(k for k in keys.public_view() if k != 'version')}")


@defenses_app.command("gradient")
def defenses_gradient(
    proxy: Annotated[str, typer.Option("--proxy", help="The proxy student: a folder, hub id or builtin:NAME.",
                                       show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Held-out teacher traces: JSONL prompt/completion or chat "
                                       "messages rows (e.g. a `distill generate` train.jsonl).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The gradient file to write (safetensors).", show_default=False)],
    device: Annotated[str, typer.Option("--device", help="auto (cuda when there is one), cpu, cuda …")] = "auto",
    debug: DebugOpt = False,
) -> None:
    """Compute antidistillation's g: the gradient of the proxy's mean completion NLL on held-out teacher traces,
    stored with the proxy's weights hash and the data's hash (key file: antidistillation.gradient)."""
    with _reported(debug):
        _quiet_libraries()
        from distill.defenses.gradient import write_gradient

        meta = write_gradient(proxy, str(data), out, device=device, progress=True)
        typer.echo(f"gradient: {out} — proxy {proxy}, {meta['rows']} rows, {meta['targets']} target tokens")


@app.command()
def models() -> None:
    """List the built-in aliases (`builtin:NAME`) for models and data sets, and where they are cached."""
    from distill.builtin.registry import BUILTINS, cache_dir

    for entry in BUILTINS.values():
        state = "cached" if entry.folder.is_dir() else "built on first use"
        typer.echo(f"builtin:{entry.name:<16} {entry.kind:<6} {entry.description} [{state}]")
    typer.echo(f"cache: {cache_dir()}")


@app.command()
def version() -> None:
    """Print the version of distill."""
    from distill import __version__

    typer.echo(__version__)


def main() -> None:
    app()
