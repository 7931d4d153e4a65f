"""`reasoning.json`, the result of `distill demo reasoning` (the DeepSeek-R1 recipe on a CPU), field by field.

Its own file and `kind` rather than a block of `eval.json`: its unit is a problem with a verified answer, not a
document with token statistics, and its arms are training-data choices (verified or not) rather than models scored
on text. It follows the same pattern: `Block` (unknown fields refused on writing, kept on reading), a
`schema_version` that changes when a field changes meaning, and a provenance block. The markdown table is made
from this file only (`demo/reasoning_report.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from distill.errors import DataError
from distill.results.schema import Block, Interval, Provenance

REASONING_SCHEMA_VERSION = 1
REASONING_KIND: Literal["distill.reasoning"] = "distill.reasoning"
ArmName = Literal["init", "unverified", "verified", "verified_kd", "teacher"]


class GenerationFacts(Block):
    """The teacher's samples on the training problems, from the generate manifest: pass@1 is the mean accepted
    share per problem (sampled at the generation temperature), pass@n the share of problems with an accepted one."""

    prompts: int
    samples_per_prompt: int
    samples: int
    accepted: int
    kept: int  # accepted, deduplicated, at most max_accepted per problem: the verified arm's training rows
    pass_at_1: float
    pass_at_n: float
    pass_at_k: dict[str, float] = Field(default_factory=dict)
    prompts_with_an_accepted_sample: int
    mean_completion_tokens: float
    finish_reasons: dict[str, int] = Field(default_factory=dict)
    seconds: float
    output: str  # the generate folder (train.jsonl, samples.jsonl, manifest.json)


class SliceCount(Block):
    correct: int
    n: int


class ArmResult(Block):
    """One model on the held-out problems, greedy: `pass_at_1` is the share answered correctly, with its 95% Wilson
    interval; `training_rows` and `accepted_rows` describe the data it was trained on (null for untrained models)."""

    name: ArmName
    label: str
    path: str
    training_rows: int | None = None
    accepted_rows: int | None = None  # of training_rows, how many the verifier accepted
    steps: int | None = None
    objective: str | None = None  # e.g. "seqkd alpha=1" (sequence-level KD) or "seqkd alpha=0.5" (+ logit KD)
    final_loss: float | None = None
    train_seconds: float | None = None
    correct: int
    n: int
    pass_at_1: Interval
    mean_completion_tokens: float
    finished_share: float  # completions that ended (EOS) rather than hitting max_new_tokens
    outputs: str  # the per-problem file (eval/<arm>.jsonl): completion, extracted answer, verdict
    # the same answers broken down: by the task's difficulty fields (e.g. `num_digits=1`) and the answer's sign
    slices: dict[str, SliceCount] = Field(default_factory=dict)


class Comparison(Block):
    """`a` − `b` in held-out pass@1, paired over the same problems: a paired bootstrap interval, the discordant
    counts (a right where b is wrong, and the reverse) and the exact McNemar p-value on them."""

    a: ArmName
    b: ArmName
    difference: Interval
    a_only: int
    b_only: int
    mcnemar_p: float


class EvalFacts(Block):
    problems: int
    seed: int
    decoding: str  # "greedy"
    max_new_tokens: int
    verifier: dict[str, Any]
    overlap_with_training: int  # held-out questions that also occur among the training problems (0 by design)
    skipped_as_training_questions: int = 0  # generated held-out problems left out because training had them


class ReasoningResult(Block):
    schema_version: int = REASONING_SCHEMA_VERSION
    kind: Literal["distill.reasoning"] = REASONING_KIND
    provenance: Provenance = Field(default_factory=Provenance)
    task: dict[str, Any]  # reasoning-gym name, config, system prompt, training and held-out seeds
    student: dict[str, Any]  # layers kept, parameters of student and teacher
    generation: GenerationFacts
    arms: list[ArmResult] = Field(min_length=1)
    comparisons: list[Comparison] = Field(default_factory=list)
    eval: EvalFacts
    options: dict[str, Any] = Field(default_factory=dict)
    wall_s: dict[str, float] = Field(default_factory=dict)  # stage → seconds
    total_wall_s: float

    @field_validator("schema_version")
    @classmethod
    def _ours(cls, version: int) -> int:
        if version != REASONING_SCHEMA_VERSION:
            raise ValueError(f"should be {REASONING_SCHEMA_VERSION}, the version this distill reads and writes")
        return version

    def to_json(self) -> dict[str, Any]:
        """As Block.to_json, with the version and kind always written (they are defaults, never set)."""
        return {"schema_version": self.schema_version, "kind": self.kind, **super().to_json()}

    def arm(self, name: str) -> ArmResult | None:
        return next((a for a in self.arms if a.name == name), None)


def load_reasoning_result(path: Path) -> ReasoningResult:
    """Read and validate a reasoning.json; every problem is one DataError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON result ({exc}); run `distill demo reasoning` again") from exc
    if not isinstance(data, dict) or data.get("kind") != REASONING_KIND:
        raise DataError(f"{path}: not a `distill demo reasoning` result (kind {REASONING_KIND!r})")
    try:
        return ReasoningResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DataError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}; run `distill demo reasoning` "
                        "again") from exc
