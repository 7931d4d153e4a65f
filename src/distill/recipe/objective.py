"""The `objective` section: what the student learns from, one section class per `objective.kind`.

Each kind's class has a `kind` field whose default is its own name, and `OBJECTIVE_CONFIGS` (kind → class) is built
from those defaults, so a kind's name is written once. `Recipe.objective` is typed by `OBJECTIVE_SECTION`: the one
class while there is one kind (pydantic refuses a discriminator on a non-union), and from the second kind on a union
told apart by `kind` (a missing `kind` means the first, the default) — so adding a kind is a new class here plus one
entry in the tuple below; the error formatter already drops pydantic's union tag from error locations.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from distill.losses.names import Divergence, TopKMode
from distill.recipe.base import FieldProblem, Section


class _LossSettings(Section):
    """The fields every objective has: the label term's weight, the loss temperature, which implementation of the
    loss, how a top-k teacher is compared, and the chunk size."""

    # whether the kind learns only completions, so `text` data (every token a target) is refused before training
    completion_only: ClassVar[bool] = False

    kind: str = Field(default="", description="The objective's kind.")  # each kind's class narrows it to its name
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
    compiled: bool = Field(
        default=False,
        description="Fuse the chunked path's elementwise work (softmaxes, the KL, the gradient) with torch.compile: "
        "about half its time on CPU (bench/loss.py). For cross-entropy and a live teacher's forward KL; other cases "
        "stay eager. The first steps compile for seconds, and on CPU a C++ compiler is needed.",
    )


    @model_validator(mode="after")
    def _compiled_is_chunked(self) -> Any:
        if self.compiled and self.implementation == "reference":
            raise FieldProblem("compiled", "fuses the chunked path's work, but implementation is `reference`; use "
                               "`chunked` or leave compiled false")
        return self


class OffPolicyConfig(_LossSettings):
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


class RolloutConfig(Section):
    """How the student writes its on-policy completions. Its own sub-section, so this temperature is the sampling
    temperature, never the loss's."""

    temperature: float = Field(default=1.0, gt=0.0, description="Sampling temperature of the student's completions. "
                               "1 samples the student's own distribution, which the on-policy estimators assume "
                               "(`onpolicy` with `estimator: sampled` and `hpd` refuse another).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling for the student's completions "
                         "(1 = the whole distribution).")
    max_new_tokens: int = Field(default=128, ge=1, description="Tokens a student completion may have (the EOS or "
                                "end-of-turn token that ends it counts and is learned).")


class OnPolicySection(Section):
    """What the on-policy kinds add: the fraction of rows the student writes, and how it writes them. Training
    forms such a kind's batches with the student-sampling batch source (`training/student_samples.py`)."""

    # the objective draws a token from the student at every position, by a uniform the batch source provides
    draws_per_position: ClassVar[bool] = False

    lmbda: float = Field(default=0.5, ge=0.0, le=1.0, description="λ: the fraction of each batch whose completions "
                         "the current student writes (evenly spread: global row g of a step is the student's when "
                         "⌊(g + 1)λ⌋ > ⌊gλ⌋); the other rows keep the data's completions. 0 = off-policy.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="How the student samples.")


class GKDConfig(OnPolicySection, OffPolicyConfig):
    """Generalized Knowledge Distillation (Agarwal et al., ICLR 2024, "On-Policy Distillation of Language Models:
    Learning from Self-Generated Mistakes"): the off-policy loss on a λ-mix of data and student-written completions,
    the teacher's signal on exactly the tokens of each row. λ = 0 is the off-policy objective itself."""

    completion_only: ClassVar[bool] = True

    kind: Literal["gkd"] = Field(  # type: ignore[assignment]
        default="gkd",
        description="`gkd`: the divergence on a λ-mix of data and student-written completions (prompt/completion "
        "or chat data; the student continues each row's prompt). docs/onpolicy.md.",
    )
    divergence: Divergence = Field(
        default="jsd",
        description="As for `offpolicy`; the default is GKD's generalized JSD(β).",
    )
    alpha: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Weight of cross-entropy on each row's completion tokens (the data's, or the student's own); the "
        "divergence gets 1 − alpha. GKD uses 0.",
    )


class OnPolicyConfig(GKDConfig):
    """On-policy reverse KL: the student writes (λ = 1 by default) and the teacher grades each token. `full`: the
    reverse KL over the whole vocabulary at every position of the student's text (GKD with β = 1). `sampled`: the
    teacher's log-prob minus the student's at the sampled token, as a per-token advantage of a policy gradient (the
    "on-policy distillation" of Thinking Machines, 2025; Gu et al.'s MiniLLM without the long-horizon terms)."""

    kind: Literal["onpolicy"] = Field(  # type: ignore[assignment]
        default="onpolicy",
        description="`onpolicy`: on-policy reverse KL on the student's own completions, as the full-vocabulary "
        "reverse KL or the sampled-token log-ratio (`estimator`). docs/onpolicy.md.",
    )
    divergence: Divergence = Field(
        default="reverse_kl",
        description="`estimator: full` only: the divergence (reverse KL by default); `sampled` is reverse KL by "
        "construction.",
    )
    lmbda: float = Field(default=1.0, ge=0.0, le=1.0, description="λ: the fraction of each batch whose completions "
                         "the student writes (1 = fully on-policy).")
    estimator: Literal["sampled", "full"] = Field(
        default="sampled",
        description="`sampled`: −(log p − log q)(y)·log q(y) at the student's token y, the log-ratio detached (an "
        "unbiased estimate of the per-token reverse-KL gradient when y is drawn from the student at temperature 1). "
        "`full`: Σ_v q(v)(log q(v) − log p(v)) at each position, exact per position, lower variance.",
    )

    @model_validator(mode="after")
    def _sampled_is_reverse_kl(self) -> OnPolicyConfig:
        if self.estimator != "sampled":
            return self
        if self.divergence != "reverse_kl":
            raise FieldProblem("divergence", f"is {self.divergence}, but `estimator: sampled` estimates reverse KL "
                               "only; use `estimator: full` for another divergence")
        if self.lmbda != 1.0:
            raise FieldProblem("lmbda", f"is {self.lmbda:g}, but `estimator: sampled` estimates the reverse KL only "
                               "on tokens the student drew itself (λ = 1); use `estimator: full` to mix in data rows")
        if self.rollout.temperature != 1.0 or self.rollout.top_p != 1.0:
            raise FieldProblem("rollout", "`estimator: sampled` needs the student's own distribution "
                               "(rollout.temperature 1, top_p 1): tokens drawn otherwise bias the estimate")
        return self


class HPDConfig(OnPolicySection, _LossSettings):
    """Hybrid Policy Distillation (Zhu, Xie, Wang, Liu 2026, arXiv 2604.20244): a token-level reweighted
    log-likelihood mixing forward and reverse KL. At each position the data token a* and one token â drawn from the
    student at the same prefix get detached weights from their k1 estimates; λ > 0 runs it on student rollouts."""

    completion_only: ClassVar[bool] = True
    draws_per_position: ClassVar[bool] = True

    kind: Literal["hpd"] = Field(  # type: ignore[assignment]
        default="hpd",
        description="`hpd`: Hybrid Policy Distillation's reweighted log-likelihood on the data token and one "
        "student-sampled token per position; with lmbda > 0 on a mix of data and student rollouts. docs/onpolicy.md.",
    )
    alpha: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Weight of a plain cross-entropy term on the completion tokens; HPD's term gets 1 − alpha. The "
        "paper uses 0.",
    )
    lmbda: float = Field(default=0.0, ge=0.0, le=1.0, description="λ: the fraction of each batch whose completions "
                         "the student writes; 0 is the paper's off-policy HPD (data tokens, one student sample per "
                         "position), 1 its on-policy variant.")

    @model_validator(mode="after")
    def _own_distribution(self) -> HPDConfig:
        if self.rollout.temperature != 1.0 or self.rollout.top_p != 1.0:
            raise FieldProblem("rollout", "hpd needs the student's own distribution (rollout.temperature 1, top_p 1)")
        if self.compiled:
            raise FieldProblem("compiled", "hpd's reweighted loss has no compiled path (it would run eager all the "
                               "same); leave compiled false")
        return self


# the name the rest of the code imports for the (off-policy) objective section
ObjectiveConfig = OffPolicyConfig

# every objective section, the default first; a new kind is one more class in this tuple
OBJECTIVE_CONFIGS: dict[str, type[Section]] = {cls.model_fields["kind"].default: cls
                                               for cls in (OffPolicyConfig, SeqKDConfig, GKDConfig,
                                                            OnPolicyConfig, HPDConfig)}
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
