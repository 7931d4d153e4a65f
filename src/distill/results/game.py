"""`game.json`, written by `bench/defense_game.py`: the distillation game's table — for each defense and strength,
the teacher's own accuracy (what the defense costs its users) against each thief's gain after distilling from its
answers, and the watermark audit's p-values (docs/defenses.md). `distill report FOLDER` renders it.

Pydantic and the standard library only, like the rest of `distill.results`; changing what a field means or removing
one is a new `GAME_SCHEMA_VERSION`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, ValidationError, field_validator, model_serializer

from distill.errors import DataError
from distill.results.io import first_problem, names_result, read_json_object
from distill.results.schema import Block, Interval

GAME = "game.json"
GAME_SCHEMA_VERSION = 1
GAME_KIND = "distill.game"
REGENERATE = "regenerate it with bench/defense_game.py"


class Thief(Block):
    """One thief's students over the seeds: mean accuracy, and the gain over the untrained student (share correct,
    a bootstrap over seeds and problems)."""

    accuracy: float
    gain: Interval
    seeds: int
    audit_p: list[float] | None = None  # watermark rows: the open-mode audit p-value of each seed's student
    audit_pairs: list[int] | None = None  # the de-duplicated pairs each p-value counted


class GameRow(Block):
    config: str
    defense: str  # temperature, poe, antidistillation, watermark, truncation
    strength: float | None = None  # T, γ, λ, δ or k
    teacher_utility: Interval  # share of the teacher's defended answers the verifier accepts (Wilson)
    same_samples_as: str | None = None  # a row that re-uses another's samples by construction (truncation)
    thieves: dict[str, Thief] = Field(default_factory=dict)  # passive, adaptive, adaptive_literal, verifier, logprob


class GameResult(Block):
    schema_version: int = GAME_SCHEMA_VERSION
    kind: Literal["distill.game"] = GAME_KIND
    init_accuracy: float  # the untrained student on the evaluation problems
    eval_problems: int
    table: list[GameRow]
    options: dict[str, Any] = Field(default_factory=dict)  # the bench's options (sizes, seeds, configs)
    wall_s_this_invocation: float | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _ours(cls, version: int) -> int:
        if version != GAME_SCHEMA_VERSION:
            raise ValueError(f"should be {GAME_SCHEMA_VERSION}, the version this distill reads and writes")
        return version

    @model_serializer(mode="wrap")
    def _versioned(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "kind": self.kind, **handler(self)}


def is_game_file(path: Path) -> bool:
    """Whether `path` names a game result (by name, or by its `kind`)."""
    return names_result(path, GAME, GAME_KIND)


def load_game(path: Path) -> GameResult:
    """Read and validate a game.json; every problem is a one-line DataError naming the file and the field."""
    path = Path(path)
    data = read_json_object(path, REGENERATE)
    try:
        return GameResult.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{path}: {first_problem(exc)}; {REGENERATE}") from exc
