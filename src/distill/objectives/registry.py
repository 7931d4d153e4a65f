"""Objectives chosen by `objective.kind`: each recipe objective section maps to the module that implements it.

The kind's name is written once, in its recipe section (`recipe/objective.py`); this registry is keyed by the
section's class, so a new objective is a new section class there and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from transformers import PreTrainedModel

from distill.errors import DataError
from distill.objectives.offpolicy import OffPolicyObjective
from distill.objectives.reweighted import ReweightedObjective
from distill.recipe import OffPolicyConfig
from distill.recipe.objective import GKDConfig, HPDConfig, OnPolicyConfig, SeqKDConfig

# (student, objective section, tokenizer size, whether a teacher signal will come) -> the objective module
ObjectiveFactory = Callable[[PreTrainedModel, object, int, bool], nn.Module]


def _onpolicy(student: PreTrainedModel, cfg: OnPolicyConfig, vocab_size: int, with_teacher: bool) -> nn.Module:
    """`estimator: full` is the divergence at every position (the off-policy loss on the student's own text);
    `sampled` the log-ratio at the sampled token."""
    if cfg.estimator == "full":
        return OffPolicyObjective(student, cfg, vocab_size, with_teacher)
    return ReweightedObjective(student, cfg, vocab_size, with_teacher)


# seqkd and gkd are the off-policy loss on other tokens (teacher-written; a λ-mix with the student's): the batch
# source, not the math, differs
OBJECTIVES: dict[type, ObjectiveFactory] = {OffPolicyConfig: OffPolicyObjective, SeqKDConfig: OffPolicyObjective,
                                            GKDConfig: OffPolicyObjective, OnPolicyConfig: _onpolicy,
                                            HPDConfig: ReweightedObjective}


def check_data_for(cfg: object, data_format: str) -> None:
    """Refuse data an objective cannot learn from: `text` records for a kind that learns only completions."""
    if getattr(cfg, "completion_only", False) and data_format == "text":
        kind = getattr(cfg, "kind", "?")
        raise DataError(f"objective.kind: {kind} learns teacher-written completions, but data.train holds `text` "
                        "records (every token would be learned); use prompt/completion or chat records, e.g. a "
                        "`distill generate` output's train.jsonl")


def build_objective(student: PreTrainedModel, cfg: object, vocab_size: int, with_teacher: bool) -> nn.Module:
    factory = OBJECTIVES.get(type(cfg))
    if factory is None:  # a recipe section without an implementation: a bug, not a user error
        raise TypeError(f"no objective implements {type(cfg).__name__}")
    return factory(student, cfg, vocab_size, with_teacher)
