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

app = typer.Typer(
    help="Knowledge distillation: turn a large teacher into a small, fast student.\n\n"
    "Examples:\n\n  distill check examples/recipes/tiny.yaml\n\n  distill train examples/recipes/tiny.yaml\n\n"
    "  distill train examples/recipes/tiny.yaml --set training.lr=1e-3 --overwrite\n\n"
    "  distill train examples/recipes/tiny.yaml --resume\n\n"
    "  accelerate launch --cpu --num_processes 2 -m distill train examples/recipes/tiny.yaml",
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
def check(recipe: RecipeArg, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Validate a recipe, load its tokenizers and model configs, tokenize its data; report every problem."""
    with _reported(debug):
        from distill.recipe import load_recipe

        loaded = load_recipe(recipe, set_ or [])
        _quiet_libraries()
        from distill.check import check_recipe

        report = check_recipe(loaded)
        for key, value in report.facts.items():
            typer.echo(f"{key:>10}: {value}")
        if report.problems:
            for problem in report.problems:
                sys.stderr.write(f"error: {' '.join(problem.split())}\n")
            raise typer.Exit(2)
        typer.echo("ok: the recipe is ready to train")


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
