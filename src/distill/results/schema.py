"""The result files as data: `eval.json` (`distill eval`) and the demo's `summary.json` (the evaluation plus training
facts, options and stage times), field by field. The field names are stable and documented in docs/eval.md; changing
what a field means or removing one is a new `SCHEMA_VERSION`.

Writers assemble a result and check it with `Model.for_writing(data)`, where a field the schema does not name is a bug
in the writer; readers go through `load_result` (results/io.py), which keeps unknown fields and fills in optional
blocks a file leaves out. Numbers are finite: a result never holds NaN or infinity (`distill.atomic.write_json`
refuses them).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 1  # of eval.json, summary.json and metrics.jsonl rows
Kind = Literal["distill.eval", "distill.demo"]
EVAL_KIND: Kind = "distill.eval"
DEMO_KIND: Kind = "distill.demo"
Role = Literal["teacher", "student", "baseline", "init", "model"]
_WRITING = "writing"


class Block(BaseModel):
    """A block of a result file; unknown fields are kept on reading and refused on writing."""

    model_config = ConfigDict(extra="allow")  # a diverged model's NLL may be inf: kept, shown as "—"

    @model_validator(mode="after")
    def _known_fields_only_when_writing(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(_WRITING) and self.model_extra:
            raise ValueError(f"has fields the schema does not name: {', '.join(self.model_extra)} (add them to "
                             "distill.results.schema and docs/eval.md)")
        return self

    @classmethod
    def for_writing(cls, data: dict[str, Any]) -> Self:
        """Validate what a writer assembled (a pydantic ValidationError here is a bug, shown with its traceback)."""
        return cls.model_validate(data, context={_WRITING: True})

    def to_json(self) -> dict[str, Any]:
        """The fields this block holds — those it was given, not the defaults filled in on reading — as JSON."""
        return self.model_dump(mode="json", exclude_unset=True)


class Interval(Block):
    """A point estimate on all documents (`mean`) and its 95% bootstrap interval. A slice of one document has a
    value but no interval: both bounds are null."""

    mean: float
    ci_low: float | None
    ci_high: float | None

    @model_validator(mode="after")
    def _both_bounds_or_neither(self) -> Self:
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError("should have both bounds (ci_low, ci_high) as numbers, or both null")
        return self


Intervals = dict[str, Interval]  # metric name → interval
Paired = dict[str, Intervals]  # "<a>_minus_<b>" → metric name → interval of a − b


class Provenance(Block):
    """Where a result came from (results/provenance.py). `cpu_count`: the CPUs the process could run on;
    `torch_threads`: the threads torch computed with."""

    distill: str | None = None
    git: str | None = None
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    platform: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    created: str | None = None  # UTC, ISO 8601


class ModelInfo(Block):
    path: str | None = None
    params: int | None = None  # unique parameters (tied embeddings once)
    disk_bytes: int | None = None  # of the weight files
    role: Role = "model"
    label: str | None = None  # shown in the report and tables; the model's name when absent
    score_tokens_per_s: float | None = None
    generate_tokens_per_s: float | None = None


class CalibrationBin(Block):
    lo: float
    hi: float
    count: int | None = None  # tokens whose top-1 confidence falls in [lo, hi)
    confidence: float | None = None  # mean confidence; null for an empty bin
    accuracy: float | None = None  # share correct; null for an empty bin


class Calibration(Block):
    ece: float | None = None
    bins: list[CalibrationBin] = []


class Contamination(Block):
    """Word n-gram overlap between an eval set and the training data (eval/contamination.py)."""

    n: int  # words per n-gram
    eval_ngrams: int | None = None
    overlapping_ngrams: int | None = None
    fraction: float | None = None  # overlapping_ngrams / eval_ngrams
    docs: int | None = None
    docs_with_overlap: int | None = None
    docs_over_half: int | None = None
    max_doc_fraction: float | None = None
    train_records: int | None = None
    train_records_with_text: int | None = None

    @model_validator(mode="after")
    def _has_a_share(self) -> Self:
        if self.share is None:
            raise ValueError("should have fraction, or eval_ngrams and overlapping_ngrams")
        return self

    @property
    def share(self) -> float | None:
        """The share of the eval set's n-grams found in the training data."""
        if self.fraction is not None:
            return self.fraction
        return self.overlapping_ngrams / self.eval_ngrams if self.overlapping_ngrams is not None and \
            self.eval_ngrams else None


class SliceEntry(Block):
    """The documents of an eval set with one value of a slice field."""

    n_docs: int | None = None
    metrics: dict[str, Intervals] = {}  # model → {"nll": interval}
    paired: Paired = {}  # only with two documents or more


class EvalSetResult(Block):
    """`sets.<name>`: every model on the same documents."""

    description: str | None = None
    path: str | None = None
    sha256: str | None = None  # of the documents' texts (of their scored fields, for chat and prompt/completion)
    format: str | None = None  # the records' format: text | prompt_completion | messages
    scored: str | None = None  # which tokens were scored, in words (eval/eval_set.py: SCORED)
    n_docs: int | None = None
    n_tokens: int | None = None  # predicted (scored) tokens
    metrics: dict[str, Intervals] = {}  # model → metric → interval
    paired: Paired = {}
    gap_recovered: Intervals = {}  # model → interval
    calibration: dict[str, Calibration] = {}
    slices: dict[str, dict[str, SliceEntry]] = {}  # field → value → entry
    contamination: Contamination | None = None
    contamination_reason: str | None = None  # why contamination is null


class TaskExample(Block):
    id: str | None = None
    question: str | None = None
    expected: str | None = None
    output: str | None = None  # the generation
    extracted: str | None = None  # the answer taken from it, null when none was found
    score: float | None = None  # the verifier's
    truncated: bool | None = None  # the generation ran into max_new_tokens (cut off, scored as it stood); null: unknown


class TaskModelResult(Block):
    accuracy: Interval | None = None
    truncated: float | None = None  # share of items whose generation ran into max_new_tokens; null: not recorded
    examples: list[TaskExample] = []  # the first few items, not the best


class TaskResult(Block):
    version: int | None = None
    n: int | None = None  # items
    description: str | None = None
    max_new_tokens: int | None = None  # the generation budget per item (the task's)
    models: dict[str, TaskModelResult] = {}
    paired: Paired = {}


class EvalResult(Block):
    """`eval.json`: models scored on eval sets and tasks. `schema_version` is always written."""

    schema_version: int = SCHEMA_VERSION
    kind: Kind = EVAL_KIND
    provenance: Provenance = Field(default_factory=Provenance)
    reference: str | None = None  # the model agreement and KL are measured against (the teacher)
    baseline: str | None = None  # the no-distillation baseline (gap recovered)
    models: dict[str, ModelInfo] = Field(min_length=1)
    primary: str | None = None  # the main eval set
    sets: dict[str, EvalSetResult] = {}
    tasks: dict[str, TaskResult] = {}
    paired: Paired = {}  # the primary set's
    inputs_key: str | None = None  # the demo's eval.json: a hash of its inputs, to know when to evaluate again

    @field_validator("schema_version")
    @classmethod
    def _ours(cls, version: int) -> int:
        if version != SCHEMA_VERSION:
            raise ValueError(f"should be {SCHEMA_VERSION}, the version this distill reads and writes")
        return version

    @model_serializer(mode="wrap")
    def _versioned(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {"schema_version": self.schema_version, **handler(self)}


class TrainingFacts(Block):
    """`training.<run>` of summary.json: a finished training run, from its metrics.jsonl."""

    run_dir: str | None = None  # relative to the summary's folder, or absolute
    steps: int | None = None
    tokens: int | None = None
    wall_s: float | None = None  # training time, summed over the logged steps (resumes included)
    final_loss: float | None = None
    recipe: str | None = None  # the resolved recipe, YAML


class DemoSummary(EvalResult):
    """`summary.json` of `distill demo`: its evaluation plus the training runs, the demo's options and the wall
    time of each stage."""

    kind: Kind = DEMO_KIND
    training: dict[str, TrainingFacts] = {}
    options: dict[str, Any] = {}
    wall_s: dict[str, float] = {}  # stage → seconds
