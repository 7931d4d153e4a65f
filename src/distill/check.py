"""`distill check`: everything that can be known about a recipe without training.

Loads tokenizers and model configs (not weights), tokenizes the data, and reports every problem found — vocabulary
mismatch, layers out of range, a missing chat template for chat data, empty data — together, not one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.data.dataset import BatchPlan, tokenize_data, tokenize_validation
from distill.errors import DistillError
from distill.models import (
    check_context_length,
    check_layer_indices,
    check_logit_width,
    check_same_vocab,
    load_config,
    load_tokenizer,
)
from distill.objectives.registry import check_data_for
from distill.recipe import Recipe


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def check_recipe(recipe: Recipe, processes: int = 1) -> CheckReport:
    """Every problem `distill train` would meet before its first step, for a run on `processes` processes (the batch
    must split into micro-batches over all of them)."""
    report = CheckReport()

    def attempt(fn):  # run one check; a DistillError becomes a reported problem
        try:
            return fn()
        except DistillError as exc:
            report.problems.append(str(exc))
            return None

    tokenizer = attempt(lambda: load_tokenizer("tokenizer", *recipe.tokenizer_options()))
    if tokenizer is not None:
        report.facts["tokenizer"] = f"{recipe.tokenizer_source} ({len(tokenizer):,} tokens)"
    teacher_cfg = None
    t = recipe.teacher
    if t is not None and t.model is not None:
        teacher_cfg = attempt(lambda: load_config("teacher.model", t.model, t.revision, t.trust_remote_code))
        if teacher_cfg is not None:
            report.facts["teacher"] = f"{t.model} ({teacher_cfg.model_type}, {teacher_cfg.num_hidden_layers} layers)"
            if tokenizer is not None:
                attempt(lambda: check_logit_width("teacher.model", teacher_cfg.vocab_size, len(tokenizer)))
            attempt(lambda: check_context_length("teacher.model", teacher_cfg, recipe.data.max_length))
    s = recipe.student
    if s.model is not None:
        student_cfg = attempt(lambda: load_config("student.model", s.model, s.revision, s.trust_remote_code))
        if student_cfg is not None:
            attempt(lambda: check_context_length("student.model", student_cfg, recipe.data.max_length))
        if student_cfg is not None and tokenizer is not None:
            attempt(lambda: check_logit_width("student.model", student_cfg.vocab_size, len(tokenizer)))
            if s.model != recipe.tokenizer_source:
                attempt(lambda: check_same_vocab(
                    tokenizer, load_tokenizer("student.model", s.model, s.revision, s.trust_remote_code)))
            report.facts["student"] = f"{s.model} ({student_cfg.model_type}, {student_cfg.num_hidden_layers} layers)"
    elif s.from_teacher is not None and teacher_cfg is not None:
        attempt(lambda: check_layer_indices(s.from_teacher.layers, teacher_cfg.num_hidden_layers))
        report.facts["student"] = f"teacher layers {s.from_teacher.layers}"
    elif s.config is not None:
        vocab = s.config.get("vocab_size")
        if vocab is not None and tokenizer is not None:
            attempt(lambda: check_logit_width("student.config.vocab_size", vocab, len(tokenizer)))
        report.facts["student"] = f"fresh {s.config['model_type']} from config"

    cache = None
    if attempt(lambda: recipe.teacher_cache) is not None:  # refuses an API teacher without a harvested cache
        from distill.teachers.cache.store import TeacherCache, describe_scheme

        cache = attempt(lambda: TeacherCache.open(t.cache))
        if cache is not None:
            m = cache.manifest
            report.facts["teacher"] = (f"cache {t.cache} ({m['setup']['teacher']['source']}, {describe_scheme(m)}, "
                                       f"T={m['capture_temperature']}, {m['n_tokens']:,} tokens, "
                                       f"{m['bytes_per_token']:.1f} bytes/token)")

    if tokenizer is not None:
        data = attempt(lambda: tokenize_data(recipe.data, tokenizer))
        if data is not None:
            attempt(lambda: check_data_for(recipe.objective, data.format))
            dropped = f", {data.dropped} dropped (nothing to learn)" if data.dropped else ""
            report.facts["data"] = (f"{len(data.examples):,} sequences ({data.format}), "
                                    f"{data.n_targets:,} target tokens{dropped}")
            held = attempt(lambda: tokenize_validation(recipe.data, tokenizer))
            if held:
                report.facts["validation"] = (f"{len(held):,} sequences, "
                                              f"{sum(e.n_targets for e in held):,} target tokens")
            tr = recipe.training
            plan = attempt(lambda: BatchPlan(len(data.examples), tr.batch_size, tr.micro_batch_size, processes,
                                             recipe.seed))
            steps_per_epoch = len(data.examples) / tr.batch_size
            report.facts["schedule"] = (f"{tr.max_steps} steps × {tr.batch_size} sequences = "
                                        f"{tr.max_steps / steps_per_epoch:.2f} epochs")
            if cache is not None:
                from distill.teachers.cache.for_recipe import check_cache_for

                attempt(lambda: check_cache_for(recipe, cache, tokenizer, data, plan))
    return report
