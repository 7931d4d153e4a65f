"""`audit.json`, written by `distill audit SUSPECT --against KEYFILE` (distill.forensics): the tests run on a suspect
model and their evidence, field by field (documented in docs/eval.md and docs/audit.md).

Every p-value is a `PValue` block that carries its own test name, its assumptions in words, the number of units it
was computed from and the raw counts, so the file can be judged without the code: a p-value whose assumptions do
not hold (the negative control without de-duplication) is kept but marked `valid: false` with the reason.

A low layer like the rest of `distill.results`: pydantic and the standard library only; the forensics code fills
it in, the report reads it. Changing what a field means or removing one is a new `AUDIT_SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, ValidationError, field_validator, model_serializer

from distill.atomic import write_json
from distill.errors import DataError
from distill.results.io import first_problem, names_result, read_json_object
from distill.results.schema import Block, Provenance

AUDIT = "audit.json"  # `distill audit --out`'s default name; `distill report DIR` renders it when present
AUDIT_SCHEMA_VERSION = 1
AUDIT_KIND = "distill.audit"
REGENERATE = "regenerate it with `distill audit`"


class PValue(Block):
    """One hypothesis test. `p_value` may underflow to 0 for overwhelming evidence: `log10_p_value` stays finite."""

    test: str  # what was computed, e.g. "one-sided exact binomial tail P(X ≥ k | N, γ)"
    assumptions: list[str]  # what must hold under H0 for p_value to be a p-value
    p_value: float = Field(ge=0, le=1)
    log10_p_value: float | None = None
    n: int = Field(ge=0)  # the units the test counted (scored pairs, canaries, documents, candidates)
    unit: str  # what `n` counts
    counts: dict[str, int | float] = Field(default_factory=dict)  # the raw counts the p-value was computed from
    valid: bool = True  # false: the assumptions are known not to hold (a negative control)
    invalid_reason: str | None = None


class WatermarkTest(Block):
    """Radioactivity (Sander et al. 2024): green (window, token) pairs in the suspect's output (closed mode) or in
    its top-1 predictions on the teacher's watermarked text (open mode)."""

    mode: Literal["closed", "open"]
    dedup: bool  # false only for the negative control (then pvalue.valid is false)
    key_id: str
    context_width: int
    gamma: float
    source: str | None = None  # the prompts (closed) or watermarked texts (open) file
    n_texts: int = 0  # generations (closed) or documents read (open)
    tokens_seen: int = 0  # candidate (window, token) pairs before any rule
    # rule → pairs it removed: prompt_window, repeated_window, filtered, repeated_pair
    skipped: dict[str, int] = Field(default_factory=dict)
    pairs_scored: int = 0
    green: int = 0
    green_share: float | None = None  # green / pairs_scored
    filter_top: int | None = None  # only windows among the teacher text's N most frequent were scored
    filter_windows: int | None = None  # windows in that filter
    settings: dict[str, Any] = Field(default_factory=dict)  # sampling settings (closed) or max_length (open), seed
    pvalue: PValue


class CanaryItem(Block):
    """One canary: where its true secret ranks among the space's candidates by the suspect's log-likelihood."""

    index: int
    trigger_id: str | None = None  # no longer written: an unkeyed hash of a trigger can be brute-forced
    loglik: float  # of the planted response with the true secret, nats
    rank: float  # 1 = the suspect likes the true secret best; estimated when rank_method is "sampled"
    rank_method: Literal["exact", "sampled"]
    candidates_scored: int
    exposure: float  # log2 |R| − log2 rank
    extracted: bool  # greedy generation on the trigger wrote the secret
    pvalue: PValue


class CanaryTest(Block):
    """Canary exposure (Carlini et al. 2019) and plain extraction."""

    space_size: int
    formatting: Literal["chat", "plain"]
    max_candidates: int
    estimator: str | None = None  # how ranks were estimated when the space is larger than max_candidates
    seed: int = 0
    n: int
    extracted: int
    extraction_rate: float
    mean_exposure: float
    items: list[CanaryItem] = Field(default_factory=list)
    combined: PValue | None = None  # Fisher's combination of the per-canary p-values


class FingerprintComparison(Block):
    """Suspect against one reference model on one distance to the teacher (1 − agreement, or forward KL)."""

    reference: str
    metric: Literal["agreement", "kl_forward"]
    suspect_mean: float
    reference_mean: float
    mean_difference: float  # mean over documents of (reference's distance − suspect's distance); > 0: suspect closer
    pvalue: PValue


class FingerprintTest(Block):
    """Output similarity to the teacher on documents, against models the suspect was not distilled from."""

    teacher: str
    documents: str | None = None
    n_docs: int
    n_tokens: int
    n_permutations: int
    method: Literal["exact", "monte_carlo"]
    seed: int = 0
    # name → {"agreement", "kl_forward"}, means over documents
    models: dict[str, dict[str, float]] = Field(default_factory=dict)
    paths: dict[str, str] = Field(default_factory=dict)  # name → folder
    comparisons: list[FingerprintComparison] = Field(default_factory=list)
    caveat: str = ""


class NullCalibration(Block):
    """The detector under H0 (bench/audit_null.py): many random keys against one clean model's text."""

    source: str | None = None  # the calibration file
    command: str | None = None
    n_keys: int
    tokens: int | None = None  # of clean text
    context_width: int | None = None
    gamma: float | None = None
    fpr: dict[str, float] = Field(default_factory=dict)  # α → share of keys with p ≤ α (with de-duplication)
    fpr_no_dedup: dict[str, float] = Field(default_factory=dict)  # without de-duplication (the negative control)
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    ks_statistic_no_dedup: float | None = None
    ks_p_value_no_dedup: float | None = None
    p_values: list[float] = Field(default_factory=list)  # with de-duplication, one per key (the QQ plot)
    p_values_no_dedup: list[float] = Field(default_factory=list)


class AuditResult(Block):
    """`audit.json`. `schema_version` is always written."""

    schema_version: int = AUDIT_SCHEMA_VERSION
    kind: Literal["distill.audit"] = AUDIT_KIND
    provenance: Provenance = Field(default_factory=Provenance)
    suspect: str
    keyfile: str | None = None
    key_public: dict[str, Any] = Field(default_factory=dict)  # the key file's public view: knobs and key ids, no secret
    watermark: list[WatermarkTest] = Field(default_factory=list)
    canaries: CanaryTest | None = None
    fingerprint: FingerprintTest | None = None
    calibration: NullCalibration | None = None
    notes: list[str] = Field(default_factory=list)

    @field_validator("schema_version")
    @classmethod
    def _ours(cls, version: int) -> int:
        if version != AUDIT_SCHEMA_VERSION:
            raise ValueError(f"should be {AUDIT_SCHEMA_VERSION}, the version this distill reads and writes")
        return version

    @model_serializer(mode="wrap")
    def _versioned(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {"schema_version": self.schema_version, **handler(self)}


def is_audit_file(path: Path) -> bool:
    """Whether `path` names an audit result (by name, or by its `kind`)."""
    return names_result(path, AUDIT, AUDIT_KIND)


def load_audit(path: Path) -> AuditResult:
    """Read and validate an audit.json; every problem is a one-line DataError naming the file and the field."""
    path = Path(path)
    data = read_json_object(path, REGENERATE)
    if data.get("schema_version") != AUDIT_SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {data.get('schema_version')!r} but this distill reads audit "
                        f"version {AUDIT_SCHEMA_VERSION}; {REGENERATE}")
    try:
        return AuditResult.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{path}: {first_problem(exc)}; {REGENERATE}") from exc


def write_audit(path: Path, result: AuditResult) -> None:
    """Write atomically, as the fields the result holds."""
    write_json(Path(path), result.to_json())


def load_calibration(path: Path) -> NullCalibration:
    """The null calibration bench/audit_null.py wrote: a JSON file (or JSON lines, the last a summary) holding a
    `calibration` object; fields this schema does not name are dropped, so the block can be written again."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
        data = json.loads(text.splitlines()[-1] if path.suffix == ".jsonl" else text)
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"--calibration {path}: cannot read it as JSON ({exc})") from None
    block = data.get("calibration", data) if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise DataError(f"--calibration {path}: no `calibration` object; run bench/audit_null.py to make one")
    known = {k: v for k, v in block.items() if k in NullCalibration.model_fields}
    try:
        return NullCalibration.model_validate({"source": str(path), **known})
    except ValidationError as exc:
        raise DataError(f"--calibration {path}: calibration.{first_problem(exc)}") from exc
