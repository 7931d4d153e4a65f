"""The `objective` section: what the student learns from, one section class per `objective.kind`.

Each kind's class has a `kind` field whose default is its own name, and `OBJECTIVE_CONFIGS` (kind → class) is built
from those defaults, so a kind's name is written once. `Recipe.objective` is typed by `OBJECTIVE_SECTION`: the one
class while there is one kind (pydantic refuses a discriminator on a non-union), and from the second kind on a union
told apart by `kind` (a missing `kind` means the first, the default) — so adding a kind is a new class here plus one
entry in the tuple below; the error formatter already drops pydantic's union tag from error locations.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Discriminator, Field, Tag

from distill.losses.names import Divergence, TopKMode
from distill.recipe.base import Section


class OffPolicyConfig(Section):
    # whether the kind learns only completions, so `text` data (every token a target) is refused before training
    completion_only: ClassVar[bool] = False

    kind: Literal["offpolicy"] = Field(
        default="offpolicy",
        description="How a batch is formed. `offpolicy`: dataset tokens, teacher signal at every position.",
    )
    divergence: Divergence = Field(
        default="forward_kl",
        description="Divergence between teacher P and student Q: `forward_kl` KL(P‖Q), `reverse_kl` KL(Q‖P), `jsd` "
        "(generalized, GKD/TRL), `interpolated_kl`, `tvd`, `skew_kl`, `skew_reverse_kl` (DistiLLM), `akl` (adaptive "
        "KL). Formulas: docs/losses.md.",
    )
    beta: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="`jsd`: mixture weight β (0 = forward KL, 1 = reverse KL); `interpolated_kl`: weight of "
        "reverse KL.",
    )
    jsd_normalized: bool = Field(
        default=False,
        description="`jsd`: divide by β(1 − β), so the value moves continuously from forward KL to reverse KL "
        "instead of shrinking toward 0 near β = 0 and 1.",
    )
    skew_alpha: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="`skew_kl` / `skew_reverse_kl`: the skew α of DistiLLM."
    )
    akl_mu: float = Field(
        default=0.5, gt=0.0, le=1.0, description="`akl`: teacher mass that defines the head (AKL's μ)."
    )
    alpha: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Weight of cross-entropy on the labels; the distillation term gets 1 − alpha. "
        "alpha = 1 is the no-distillation baseline (no teacher needed).",
    )
    temperature: float = Field(
        default=1.0,
        gt=0.0,
        description="Loss temperature T: both distributions are softened by T, the term scaled by T².",
    )
    implementation: Literal["chunked", "reference"] = Field(
        default="chunked",
        description="`chunked`: the fused path from hidden states, never holding full logits (default). "
        "`reference`: full logits, plain autograd — the slow twin, for checking.",
    )
    topk_mode: TopKMode = Field(
        default="tail",
        description="With a top-k teacher (a cache): `tail` compares k + 1 outcomes, the k tokens and the mass outside "
        "them (exact when k is the vocabulary); `renormalize` treats the k tokens as the whole distribution.",
    )
    chunk_size: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per chunk of the chunked path; null = about 16M logits per chunk (341 tokens at a 49k "
        "vocabulary).",
    )


class SeqKDConfig(OffPolicyConfig):
    """Sequence-level KD (Kim & Rush 2016, "Sequence-Level Knowledge Distillation"): the student learns the text
    the teacher wrote (`distill generate`), by cross-entropy on the completion tokens only. The same loss as
    `offpolicy` on such data; a kind of its own so a recipe says what it does, its data are checked to be
    prompt/completion or chat records (never `text`, where every token would be learned), and alpha defaults to 1."""

    completion_only: ClassVar[bool] = True

    kind: Literal["seqkd"] = Field(  # type: ignore[assignment]
        default="seqkd",
        description="`seqkd`: cross-entropy on teacher-written completions (prompt/completion or chat data, loss "
        "on the completion / assistant tokens only); with alpha < 1 also logit KD from the teacher (live, cached "
        "or harvested top-N) on the same tokens.",
    )
    alpha: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Weight of cross-entropy on the teacher's completions; the logit-KD term gets 1 − alpha. 1 = "
        "pure sequence-level KD (no teacher needed at training time).",
    )


# the name the rest of the code imports for the (off-policy) objective section
ObjectiveConfig = OffPolicyConfig

# every objective section, the default first; a new kind is one more class in this tuple
OBJECTIVE_CONFIGS: dict[str, type[Section]] = {cls.model_fields["kind"].default: cls
                                               for cls in (OffPolicyConfig, SeqKDConfig)}
DEFAULT_OBJECTIVE = next(iter(OBJECTIVE_CONFIGS.values()))


def _objective_kind(value: Any) -> Any:
    """The tag of an objective section, raw (a mapping) or validated: its `kind`, the default kind when absent."""
    if isinstance(value, dict):
        return value.get("kind", DEFAULT_OBJECTIVE.model_fields["kind"].default)
    return getattr(value, "kind", None)


def _objective_section() -> Any:
    configs = tuple(Annotated[cls, Tag(kind)] for kind, cls in OBJECTIVE_CONFIGS.items())
    if len(configs) == 1:
        return DEFAULT_OBJECTIVE
    return Annotated[Union[configs], Discriminator(_objective_kind)]  # noqa: UP007 (a tuple of types, built above)


OBJECTIVE_SECTION = _objective_section()
