"""Everything a run needs before its first step: tokenizer, data, student, the teacher source and the batch source.

The order is part of the recipe's meaning: the seed is set first and the models are built in a fixed order, so the
same recipe and seed give the same initial student. Every compatibility check that needs the loaded models runs
here, before any optimizer exists; the checks that need only configs run earlier still, in `distill check`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distill.data.dataset import BatchPlan, TokenizedData, tokenize_data, tokenize_validation
from distill.data.formatting import Example
from distill.generation.engine import Engine
from distill.generation.sampling import SamplingParams
from distill.losses.lm_head import check_head
from distill.models import (
    build_student,
    check_context_length,
    check_logit_width,
    check_same_vocab,
    load_teacher,
    load_tokenizer,
    output_width,
)
from distill.objectives.registry import check_data_for
from distill.recipe import Recipe
from distill.recipe.objective import OnPolicySection
from distill.teachers.api.live import ApiTeacher
from distill.teachers.cache.for_recipe import check_cache_for
from distill.teachers.cache.source import CachedTeacher
from distill.teachers.cache.store import TeacherCache
from distill.teachers.sharding import shard_teacher
from distill.teachers.source import LiveTeacher, TeacherSource
from distill.training.batches import DatasetBatches
from distill.training.student_samples import StudentSamples


@dataclass
class RunParts:
    tokenizer: PreTrainedTokenizerBase
    data: TokenizedData
    student: PreTrainedModel
    teacher: TeacherSource | None  # None: cross-entropy only (alpha = 1)
    batches: DatasetBatches  # or StudentSamples, the on-policy kinds' source
    validation: Sequence[Example] | None = None  # data.validation or the held-out fraction (a store with the cache)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)


def build_parts(recipe: Recipe, accelerator: Accelerator) -> RunParts:
    set_seed(recipe.seed)
    t = recipe.teacher
    from_cache = recipe.teacher_cache is not None
    # with a cache, the teacher model is loaded only when the student's layers are copied from it
    need_model = t is not None and t.model is not None and (not from_cache or recipe.student.from_teacher is not None)
    with accelerator.main_process_first():  # built-ins are materialised by the main process first
        tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
        teacher = load_teacher(t) if need_model else None
        student = build_student(recipe, tokenizer, teacher)
        data = tokenize_data(recipe.data, tokenizer)
        validation = tokenize_validation(recipe.data, tokenizer)
    check_data_for(recipe.objective, data.format)
    objective = recipe.objective
    # an on-policy row is its prompt (≤ max_length) and up to max_new_tokens the student writes
    longest = recipe.data.max_length + (objective.rollout.max_new_tokens if isinstance(objective, OnPolicySection)
                                        else 0)
    for field, model in (("student", student), ("teacher.model", teacher)):
        if model is not None:
            check_context_length(field, model.config, longest)
    cache = None
    if from_cache:  # refused unless built for this tokenizer, data, k, temperature and teacher
        cache = TeacherCache.open(t.cache)
        check_cache_for(recipe, cache, tokenizer, data, None, teacher)
        teacher = None  # the signal comes from the cache; the model only initialised the student
    if recipe.student.model is not None and recipe.student.model != recipe.tokenizer_source:
        s = recipe.student
        check_same_vocab(tokenizer, load_tokenizer("student.model", s.model, s.revision, s.trust_remote_code))
    vocab_size = len(tokenizer)
    check_logit_width("student", output_width(student), vocab_size)
    if teacher is not None:
        check_logit_width("teacher", output_width(teacher), vocab_size)
    shard_note = None
    if recipe.objective.alpha >= 1.0:
        teacher = None  # the baseline needs no teacher; it may have served only to initialise the student
    elif teacher is not None and t.shard:  # each process keeps 1/N of the decoder layers (teachers/sharding.py)
        shard_note = shard_teacher(teacher, accelerator.device, accelerator.num_processes)
    elif teacher is not None:
        teacher.to(accelerator.device)
    if recipe.objective.implementation == "chunked":
        for field, model in (("student", student), ("teacher.model", teacher)):
            if model is not None:
                check_head(model, field)
    cfg = recipe.training
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable()
        student.config.use_cache = False
    plan = BatchPlan(len(data.examples), cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes, recipe.seed)
    source: TeacherSource | None = None
    if cache is not None:
        cache.check_covers(plan.visited(cfg.max_steps))
        source = CachedTeacher(cache, accelerator.device, name=t.cache, estimator=t.sample_weights)
    elif teacher is not None:
        source = LiveTeacher.for_implementation(teacher, vocab_size, recipe.objective.implementation)
        if shard_note is not None:
            source.description += f"; {shard_note}"
    elif recipe.scores_api_live:  # the student's completions exist only now: the API scores each batch
        source = ApiTeacher(t.api, tokenizer, t.top_k)
    batches = _batch_source(recipe, data, plan, accelerator.process_index, tokenizer, student)
    return RunParts(tokenizer, data, student, source, batches, validation)


def _batch_source(recipe: Recipe, data: TokenizedData, plan: BatchPlan, rank: int, tokenizer, student
                  ) -> DatasetBatches:
    """The data-set plan, or for an on-policy kind the plan with λ of its rows completed by the student."""
    cfg = recipe.objective
    if not isinstance(cfg, OnPolicySection):
        return DatasetBatches(data, plan, rank, tokenizer.pad_token_id)
    r = cfg.rollout
    params = SamplingParams(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)
    engine = Engine(student, tokenizer, max_batch_size=recipe.training.micro_batch_size)
    return StudentSamples(data, plan, rank, tokenizer.pad_token_id, engine=engine, lmbda=cfg.lmbda, params=params,
                          seed=recipe.seed, with_draws=cfg.draws_per_position)
