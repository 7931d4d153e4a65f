"""Objectives chosen by `objective.kind`: each recipe objective section maps to the module that implements it.

The kind's name is written once, in its recipe section (`recipe/objective.py`); this registry is keyed by the
section's class, so a new objective is a new section class there and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from transformers import PreTrainedModel

from distill.objectives.offpolicy import OffPolicyObjective
from distill.recipe import OffPolicyConfig

# (student, objective section, tokenizer size, whether a teacher signal will come) -> the objective module
ObjectiveFactory = Callable[[PreTrainedModel, object, int, bool], nn.Module]
OBJECTIVES: dict[type, ObjectiveFactory] = {OffPolicyConfig: OffPolicyObjective}


def build_objective(student: PreTrainedModel, cfg: object, vocab_size: int, with_teacher: bool) -> nn.Module:
    factory = OBJECTIVES.get(type(cfg))
    if factory is None:  # a recipe section without an implementation: a bug, not a user error
        raise TypeError(f"no objective implements {type(cfg).__name__}")
    return factory(student, cfg, vocab_size, with_teacher)
