"""What a cache must be for a recipe: the setup it is built for, and training's checks of a cache before the first
step. `distill cache` writes this setup into the manifest; `distill train` and `distill check` compare against it."""

from __future__ import annotations

from typing import Any

from distill.data.dataset import BatchPlan, TokenizedData
from distill.data.identity import tokenizer_identity
from distill.errors import CacheError
from distill.losses.divergences import DivergenceSpec
from distill.losses.sampled import sampled_problem
from distill.losses.support import retempering_problem
from distill.recipe import Recipe
from distill.teachers.cache.fingerprint import TOPK_SCHEME, data_sha256, teacher_identity
from distill.teachers.cache.store import TeacherCache


def recipe_setup(recipe: Recipe, tokenizer, data: TokenizedData, teacher=None) -> dict[str, Any]:
    """What a cache for this recipe is built for, as `setup_differences` compares it: tokenizer, data, scheme (k, or
    the sampled scheme's draws and proposal temperature) and temperature, and the teacher the recipe names (model,
    revision, dtype) — with its config and weight hashes when the model is at hand. A recipe with only
    `teacher.cache` names no teacher, and the cache is its teacher."""
    t = recipe.teacher
    setup = {"tokenizer": tokenizer_identity(tokenizer),
             "data": {"sha256": data_sha256(data.examples), "config": recipe.data.model_dump(mode="json"),
                      "n_examples": len(data.examples), "n_tokens": data.n_targets},
             "k": t.top_k if t.cache_scheme == "topk" else None, "capture_temperature": recipe.capture_temperature,
             "scheme": scheme_of(recipe)}
    if t.api is not None:  # an API teacher is named by its model (its address may move); see teachers/api/harvest.py
        setup["teacher"] = {"source": f"api:{t.api.model}", "revision": None, "dtype": None}
    elif teacher is not None:
        setup["teacher"] = teacher_identity(teacher, t.model, t.dtype, t.revision)
    elif t.model is not None:
        setup["teacher"] = {"source": t.model, "revision": t.revision, "dtype": t.dtype}
    return setup


def scheme_of(recipe: Recipe) -> dict[str, Any]:
    """The cache scheme and its parameters, as the manifest records them (`TOPK_SCHEME` for top-k)."""
    t = recipe.teacher
    if t.cache_scheme == "topk":
        return dict(TOPK_SCHEME)
    return {"name": "sampled", "draws": t.sample_draws, "proposal_temperature": t.proposal_temperature}


def check_cache_for(recipe: Recipe, cache: TeacherCache, tokenizer, data: TokenizedData, plan: BatchPlan | None,
                    teacher=None) -> None:
    """Training's checks of its cache before the first step, shared with `distill check`: the setup (with the
    teacher's weights when loaded), the loss temperature the tail allows, every example the run visits present."""
    cache.check_setup(recipe_setup(recipe, tokenizer, data, teacher))
    o = recipe.objective
    if cache.scheme["name"] == "sampled":
        spec = DivergenceSpec(kind=getattr(o, "divergence", "forward_kl"), beta=getattr(o, "beta", 0.5))
        problem = sampled_problem(spec, cache.capture_temperature, o.temperature)
        if problem:
            raise CacheError(f"teacher.cache: {cache.root} is a sampled cache: {problem}")
        if cache.manifest.get("encoding") == "counts" and recipe.teacher.sample_weights != "counts":
            raise CacheError(f"teacher.sample_weights: {recipe.teacher.sample_weights} needs each draw's log p, and "
                             f"{cache.root} was built with --encoding counts, which keeps none; use "
                             "sample_weights: counts, or rebuild the cache with --encoding q8")
    elif problem := retempering_problem(cache.k, len(tokenizer), cache.capture_temperature, o.temperature,
                                        o.topk_mode):
        raise CacheError(f"objective.temperature: {o.temperature:g} with objective.topk_mode: tail and a cache "
                         f"captured at {cache.capture_temperature:g}: {problem}. Rebuild the cache with "
                         f"teacher.capture_temperature: {o.temperature:g} (the default follows objective.temperature), "
                         "or set objective.topk_mode: renormalize")
    if plan is not None:
        cache.check_covers(plan.visited(recipe.training.max_steps))
