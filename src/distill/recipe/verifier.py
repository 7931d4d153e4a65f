"""`generate.verifier`: what a recipe says about its verifier, one small spec per built-in, chosen by `kind`
(docs/generate.md, "Verifiers"). Recipe data, with no heavy import; the verifiers themselves live in
`generation/verifiers.py`, whose `VERIFIERS` is keyed by spec class (like objectives/registry.py).
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from distill.errors import RecipeError

# How a text answer is read: `final` the strongest marked answer (eval/tasks/scoring.marked_answers; without a mark,
# none), or one of the eval tasks' extraction modes (TaskSpec.extract)
Extraction = Literal["final", "last_number", "after_answer", "first_line", "full"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasoningGymSpec(_Spec):
    kind: Literal["reasoning_gym"] = Field(
        default="reasoning_gym", description="`reasoning_gym`: the task's own `score_answer` on the extracted answer.")
    dataset: str | None = Field(default=None, description="reasoning-gym dataset whose `score_answer` judges; null = "
                                "the entry's own `metadata.source_dataset`.")
    config: dict[str, Any] = Field(default_factory=dict, description="The dataset's config, for its scorer.")
    entry_field: str = Field(default="entry", description="Record field holding the reasoning-gym item.")
    extract: Extraction = Field(default="final", description="How the answer is read from the completion.")
    threshold: float = Field(default=1.0, ge=0.0, le=1.0, description="Accept at score >= threshold. reasoning-gym "
                             "pays shaping rewards (0.01 for any number on gsm_symbolic): keep 1.0 for correctness.")


class FinalNumberSpec(_Spec):
    kind: Literal["final_number"] = Field(
        default="final_number", description="`final_number`: the completion's final number (the first number of its "
        "strongest marked answer: `#### N`, `\\boxed{N}`, `answer: N`; else its last number) equals the record's.")
    answer_field: str = Field(default="answer", description="Record field holding the reference number.")


class ExactSpec(_Spec):
    kind: Literal["exact"] = Field(
        default="exact", description="`exact`: the extracted answer equals the record's (normalised).")
    answer_field: str = Field(default="answer", description="Record field holding the reference answer.")
    extract: Extraction = Field(default="full", description="How the answer is read from the completion.")


class RegexSpec(_Spec):
    kind: Literal["regex"] = Field(
        default="regex", description="`regex`: a regular expression matches the completion.")
    pattern: str | None = Field(default=None, description="Python regex; null = the record's `answer_field` holds it.")
    answer_field: str = Field(default="answer", description="Record field holding the pattern when `pattern` is null.")
    match: Literal["search", "fullmatch"] = Field(default="search", description="`search`: anywhere in the "
                                                  "completion; `fullmatch`: the whole completion, stripped.")


class PythonSpec(_Spec):
    kind: Literal["python"] = Field(
        default="python", description="`python`: a function of yours judges.")
    function: str = Field(description="`module:function` called as function(record, completion) -> bool | float | "
                          "Verdict; a float is a score in [0, 1].")
    threshold: float = Field(default=1.0, ge=0.0, le=1.0, description="Accept a float score at >= threshold.")


SPECS: tuple[type[_Spec], ...] = (ReasoningGymSpec, FinalNumberSpec, ExactSpec, RegexSpec, PythonSpec)
KINDS: dict[str, type[_Spec]] = {cls.model_fields["kind"].default: cls for cls in SPECS}
VerifierSpec = Annotated[ReasoningGymSpec | FinalNumberSpec | ExactSpec | RegexSpec | PythonSpec,
                         Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(VerifierSpec)


def verifier_spec(raw: Any) -> Any:
    """A recipe's verifier value as a spec: a spec, a mapping with `kind`, or a kind's name (all defaults). A
    problem is one RecipeError naming each field (`verifier.…`), an unknown kind with a did-you-mean."""
    if isinstance(raw, _Spec):
        return raw
    value = {"kind": raw} if isinstance(raw, str) else dict(raw)
    kind = value.get("kind")
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(f"verifier.kind: unknown verifier {kind!r}; {hint}built-in: {', '.join(KINDS)}")
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise RecipeError("; ".join(f"verifier.{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}"
                                    for e in exc.errors())) from None
