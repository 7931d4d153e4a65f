"""The whole recipe: its sections, and the rules that span them (a teacher unless `objective.alpha` is 1, a teacher
model for `student.from_teacher`, somewhere to take the tokenizer from)."""

from __future__ import annotations

from pydantic import Field, model_validator

from distill.errors import RecipeError
from distill.recipe.base import FieldProblem, Section
from distill.recipe.data import DataConfig
from distill.recipe.generate import GenerateConfig
from distill.recipe.objective import DEFAULT_OBJECTIVE, OBJECTIVE_SECTION, OnPolicySection
from distill.recipe.student import StudentConfig
from distill.recipe.teacher import TeacherConfig
from distill.recipe.training import TrainingConfig


class Recipe(Section):
    seed: int = Field(
        default=0, description="Seeds model init, data order and dropout; same recipe + seed → same weights."
    )
    teacher: TeacherConfig | None = Field(
        default=None, description="The frozen teacher. May be omitted only when objective.alpha is 1 (no distillation)."
    )
    student: StudentConfig = Field(description="The model being trained.")
    tokenizer: str | None = Field(
        default=None,
        description="Where the shared tokenizer comes from (id, folder or `builtin:NAME`). Default: the teacher's, "
        "else the student model's. An API teacher (`teacher.api`) has none here: its tokens are mapped to this one.",
    )
    data: DataConfig = Field(description="Where training sequences come from and how they are tokenized.")
    objective: OBJECTIVE_SECTION = Field(default_factory=DEFAULT_OBJECTIVE, description="What the student learns from.")
    training: TrainingConfig = Field(description="Optimizer, schedule, batch sizes, checkpoints.")
    generate: GenerateConfig | None = Field(
        default=None, description="What `distill generate` has the teacher write (ignored by `distill train`, so one "
        "file can hold both steps: `data.train` pointing at `generate.output`/train.jsonl).",
    )

    @model_validator(mode="after")
    def _validation_when_evaluated(self) -> Recipe:
        t = self.training
        if (t.eval_every is not None or t.keep_best is not None) and not self.data.has_validation:
            field = "eval_every" if t.eval_every is not None else "keep_best"
            raise FieldProblem(f"training.{field}", "needs validation data: data.validation (a source) or "
                               "data.validation_fraction (a held-out share of data.train)")
        return self

    @model_validator(mode="after")
    def _teacher_when_needed(self) -> Recipe:
        if self.teacher is None and self.objective.alpha < 1.0:
            raise FieldProblem("teacher", "required unless objective.alpha is 1 (plain cross-entropy)")
        if self.student.from_teacher is not None and (self.teacher is None or self.teacher.model is None):
            raise FieldProblem("teacher.model", "required by student.from_teacher (the layers are copied from it)")
        if self.teacher is not None and self.teacher.api is not None and self.capture_temperature != 1.0:
            given = "" if self.teacher.capture_temperature is not None else ", from objective.temperature"
            raise FieldProblem("teacher.capture_temperature", f"must be 1 with teacher.api, the temperature servers "
                               f"report log-probs at (it is {self.capture_temperature:g}{given}); set "
                               "teacher.capture_temperature: 1, and train with objective.temperature: 1 or "
                               "objective.topk_mode: renormalize")
        if self.teacher is not None and self.teacher.api is not None and self.data.reset_attention:
            raise FieldProblem("data.reset_attention", "an API teacher scores each packed block as one text; it "
                               "cannot keep the documents apart. Use a local teacher.model, or reset_attention: false")
        if self.teacher is not None and self.teacher.api is not None and self.teacher.cache_scheme == "sampled":
            raise FieldProblem("teacher.cache_scheme", "`sampled` draws from the teacher's whole distribution; an API "
                               "returns its top log-probs only. Use `topk` with teacher.api")
        problem = self._onpolicy_teacher_problem()
        if problem:
            raise FieldProblem("teacher", problem)
        if self.tokenizer_source is None:
            raise FieldProblem("tokenizer", "required when the student is built from `config` and there is no "
                               "teacher.model")
        return self

    def _onpolicy_teacher_problem(self) -> str | None:
        """An on-policy kind needs the teacher's signal on tokens the student writes during training: a cache (built
        before training, on the data's tokens) cannot hold it, an API teacher scores them live. `hpd` and the
        sampled estimator need the teacher's probability of tokens the student draws, which only a whole
        distribution (a live teacher.model) holds."""
        o, t = self.objective, self.teacher
        if not isinstance(o, OnPolicySection) or t is None or (t.cache is None and t.api is None) or o.alpha >= 1:
            return None
        if o.draws_per_position or getattr(o, "estimator", "full") == "sampled":
            return (f"objective.kind: {o.kind} needs the teacher's whole distribution at tokens the student draws; a "
                    "cache or an API gives top-k log-probs only. Use a live teacher.model")
        if o.lmbda > 0 and t.cache is not None:
            return (f"objective.kind: {o.kind} with lmbda > 0 needs the teacher's signal on the student's own "
                    "completions, written during training; a cache holds the data's tokens only. Use a live "
                    "teacher.model, or teacher.api without a cache (scored live), or lmbda: 0")
        if o.lmbda > 0 and o.topk_mode == "tail" and o.temperature != 1.0:
            return (f"objective.temperature is {o.temperature:g}, but an API teacher's log-probs are at temperature 1 "
                    "and the tail bucket cannot be re-tempered; use objective.temperature: 1 or topk_mode: "
                    "renormalize")
        return None

    @property
    def scores_api_live(self) -> bool:
        """Training asks the API teacher to score each batch: an on-policy kind whose student writes (λ > 0)."""
        t, o = self.teacher, self.objective
        return (t is not None and t.api is not None and t.cache is None and isinstance(o, OnPolicySection)
                and o.lmbda > 0 and o.alpha < 1.0)

    def tokenizer_options(self) -> tuple[str, str | None, bool]:
        """(source, revision, trust_remote_code) of the shared tokenizer: the model it comes from decides the
        revision and whether its code may run."""
        return _tokenizer_options(self.tokenizer, self.teacher, self.student)

    @property
    def capture_temperature(self) -> float:
        """The temperature a teacher cache for this recipe stores: teacher.capture_temperature, else the loss's."""
        t = self.teacher.capture_temperature if self.teacher is not None else None
        return t if t is not None else self.objective.temperature

    @property
    def teacher_cache(self) -> str | None:
        """The cache training reads the teacher's signal from: teacher.cache, unless alpha = 1 needs no teacher.

        Off-policy training never calls an API teacher (a request per micro-batch, its failures mid-step, a signal
        that cannot be reproduced on resume): it reads what `distill cache` harvested. Only on-policy kinds, whose
        student writes text no cache can hold, have it score each batch live (`scores_api_live`). Otherwise an API
        teacher without a cache raises `RecipeError` here, where training asks where its signal comes from, before
        any work — not in the validator, since `distill cache RECIPE --out DIR` harvests from that same recipe."""
        t = self.teacher
        if t is not None and t.api is not None and t.cache is None and self.objective.alpha < 1.0 \
                and not self.scores_api_live:
            raise RecipeError("teacher.cache: training reads an API teacher's signal from a cache, never the API; "
                              "harvest it first with `distill cache RECIPE --out DIR`, then set teacher.cache: DIR")
        return t.cache if t is not None and t.cache is not None and self.objective.alpha < 1.0 else None

    @property
    def tokenizer_source(self) -> str | None:
        return self.tokenizer_options()[0] or None


def _tokenizer_options(tokenizer: str | None, teacher: TeacherConfig | None, student: StudentConfig | None
                       ) -> tuple[str, str | None, bool]:
    """The tokenizer named by `tokenizer`, else the teacher model's, else the student model's ("" when none),
    with the revision and trust_remote_code of the model it comes from."""
    if tokenizer:
        return tokenizer, None, False
    for model in (teacher, student):
        if model is not None and model.model is not None:
            return model.model, model.revision, model.trust_remote_code
    return "", None, False


# the sections a recipe for `distill train` needs and a recipe for `distill generate` alone may leave out
TRAINING_SECTIONS = ("student", "data", "objective", "training")


class GenerationRecipe(Section):
    """A recipe `distill generate` reads when it has no training sections: the teacher, the tokenizer and the
    `generate` section (same fields, defaults and descriptions as in `Recipe`)."""

    teacher: TeacherConfig = Field(description=Recipe.model_fields["teacher"].description)
    tokenizer: str | None = Field(default=None, description=Recipe.model_fields["tokenizer"].description)
    generate: GenerateConfig = Field(description=Recipe.model_fields["generate"].description)

    def tokenizer_options(self) -> tuple[str, str | None, bool]:
        return _tokenizer_options(self.tokenizer, self.teacher, None)
