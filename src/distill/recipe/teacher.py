"""The `teacher` section: a live model, a teacher cache written by `distill cache`, an OpenAI-compatible API, or a
combination.

One class, not a live-, a cached- and an API-teacher class discriminated by source: they would share most fields and
differ only in which of `model` / `cache` / `api` is required. A cache-trained run may still name `model` (to
initialise `student.from_teacher`, and to check the cache's teacher identity), and an API teacher needs `cache` to
train (training never calls the API: `distill cache` harvests it into a cache first), so "cached" means "`cache` is
set", not a separate shape. Splitting would write `model` and `cache` (defaults and descriptions) two or three times
or generate them from one another, make a teacher's class depend on a value that `--set` or assignment can change
afterwards, add a union tag to error locations and class names to messages, and change the generated reference, all
for one check: "`model`, `cache` or `api`" — which stays the single validator below. The rules that involve other
sections (an API teacher's capture temperature, `from_teacher` needing `model`, training refusing an API teacher
without a cache) are in `schema.py`.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from distill.losses.names import SampleWeights
from distill.recipe.api import ApiConfig
from distill.recipe.base import FieldProblem, Section

# what a teacher cache stores per position (teachers/cache/): the top-k, or tokens drawn from the teacher
CacheScheme = Literal["topk", "sampled"]

# the precisions a frozen teacher loads in; models.py maps each name to its torch dtype
TeacherDtype = Literal["float32", "bfloat16", "float16"]
TEACHER_DTYPES: tuple[str, ...] = get_args(TeacherDtype)


class TeacherConfig(Section):
    model: str | None = Field(
        default=None,
        description="Hugging Face model id, local folder, or `builtin:NAME` (see `distill models`): the live teacher, "
        "and what `distill cache` runs (unless `api` is set).",
    )
    cache: str | None = Field(
        default=None,
        description="A teacher cache folder written by `distill cache`: training reads the teacher's top-k signal "
        "from it and loads no teacher model (unless `student.from_teacher` needs its layers).",
    )
    api: ApiConfig | None = Field(
        default=None,
        description="An OpenAI-compatible endpoint serving the teacher (`distill serve`, vLLM, …): `distill cache` "
        "harvests its top-`top_k` log-probs into `cache` (see docs/api.md), and training reads that cache. Its "
        "tokens are mapped to the recipe's `tokenizer` (else the student's), which must be the teacher's.",
    )
    top_k: int = Field(
        default=64, ge=1, description="Tokens per position a cache stores (and, with `cache`, must have stored). "
        "With `api`: the log-probs asked per position, which many servers cap at 20 (vLLM's `--max-logprobs`)."
    )
    cache_scheme: CacheScheme = Field(
        default="topk",
        description="What `distill cache` stores per position. `topk`: the `top_k` most likely tokens and the tail's "
        "mass (biased once truncated: a student of a small-k cache can do worse than one of the live teacher). "
        "`sampled`: `sample_draws` tokens drawn from the teacher with importance weights (Anshumann et al. 2025), "
        "an unbiased estimate of the forward-KL gradient at a fraction of the bytes; forward KL only, at the capture "
        "temperature. See docs/cache.md.",
    )
    sample_draws: int = Field(
        default=32, ge=1, le=255, description="`cache_scheme: sampled`: tokens drawn per position (with replacement; "
        "the distinct ones and their counts are stored). The gradient's variance falls as 1 / draws.",
    )
    proposal_temperature: float = Field(
        default=1.0, ge=1.0, description="`cache_scheme: sampled`: draw from the teacher flattened by this temperature "
        "(p^(1/t)), reweighted back to the teacher (unbiased for any t ≥ 1). 1 draws from the teacher itself, whose "
        "weights are plain counts; above 1 reaches further into the tail at the cost of uneven weights.",
    )
    sample_weights: SampleWeights = Field(
        default="counts", description="`cache_scheme: sampled`: how training weights the drawn tokens; both are "
        "unbiased. `counts`: the paper's count / draws · p / r, exact whatever the values' encoding at t = 1. "
        "`inclusion`: p / P(drawn at least once), lower variance (none for tokens nearly sure to be drawn) but as "
        "exact as the stored log p (q8 biases it by the quantisation error). Measured equal on the demo "
        "(docs/cache.md). Chosen when reading, so one cache serves both.",
    )
    capture_temperature: float | None = Field(
        default=None,
        gt=0.0,
        description="Temperature of the log-probs a cache stores (with `cache`: must be the cache's); null = "
        "objective.temperature. `topk_mode: tail` needs the two equal (the tail's mass is known only at the capture "
        "temperature); `renormalize` re-tempers the top-k exactly. With `api` it must be 1: servers report the "
        "model's own distribution.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) of `model`.")
    trust_remote_code: bool = Field(
        default=False, description="Allow the model's own Python code to run. Off unless you trust the source."
    )
    dtype: TeacherDtype = Field(default="float32", description="Precision the frozen teacher is loaded in.")
    shard: bool = Field(
        default=False,
        description="`distill train` on several processes: split each decoder layer of the live teacher across the "
        "processes (torch FSDP2), so each holds about 1/N of the layers' weights and gathers one layer at a time for "
        "its forward pass. The embeddings, final norm and LM head stay whole in every process (the chunked loss "
        "reads the head's weight). The same losses as a whole teacher; on one process the teacher is kept whole. "
        "Needs a live `model`, not `cache` or `api`; `distill cache` and `distill generate` load the teacher whole. "
        "Tested on CPU (gloo) only. "
        "See README, Several processes.",
    )

    @model_validator(mode="after")
    def _a_source(self) -> TeacherConfig:
        if self.model is None and self.cache is None and self.api is None:
            raise ValueError("set `model` (a live teacher), `cache` (a folder from `distill cache`), `api` (an "
                             "OpenAI-compatible endpoint to harvest with `distill cache`), or several")
        return self

    @model_validator(mode="after")
    def _shard_a_live_model(self) -> TeacherConfig:
        """Only a teacher run in every process can be split across them; a cache or an API teacher is never run."""
        if self.shard and self.cache is not None:
            raise FieldProblem("shard", "splits a live teacher.model across the processes, but with teacher.cache "
                               "training reads the teacher's signal from disk and runs no teacher; remove "
                               "teacher.shard, or teacher.cache to run the teacher live")
        if self.shard and self.api is not None:
            raise FieldProblem("shard", "splits a live teacher.model across the processes, but teacher.api is served "
                               "elsewhere and scored through its endpoint; remove teacher.shard, or teacher.api to run "
                               "teacher.model live")
        return self
