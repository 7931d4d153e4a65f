"""Errors meant for people.

Everything that can go wrong because of user input (a recipe, data, a model, a checkpoint) raises a subclass of
`DistillError`. The CLI prints its message as one line and exits with `exit_code`, without a traceback, unless
`--debug` is given. Internal invariants use `assert` and are bugs when they fire.
"""

from __future__ import annotations


class DistillError(Exception):
    """Base class: a problem the user can fix. The message says what, where, and what to do next."""

    exit_code = 2


class RecipeError(DistillError):
    """The recipe is malformed: unknown key, wrong type, impossible value, missing file."""


class DataError(DistillError):
    """The training data cannot be read, is empty, or does not match the declared format."""


class ModelError(DistillError):
    """A teacher or student cannot be loaded or built, or the two are incompatible."""


class CheckpointError(DistillError):
    """A checkpoint or run folder is missing, corrupted, or does not match the recipe."""


class CacheError(DistillError):
    """A teacher cache is missing, incomplete, corrupted, or was built for a different setup."""


class TrainingError(DistillError):
    """Training itself failed (non-finite loss or gradients). Not an input error, hence exit code 1."""

    exit_code = 1
