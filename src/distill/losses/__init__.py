"""Loss pieces as pure functions.

`divergence` / `token_divergence` are the reference path: full student logits against dense teacher logits or a
top-k signal. `fused_linear_loss` is the memory-lean twin used for training: it starts from hidden states and the
LM-head weight and never holds a full logits tensor. The training loop sums pieces over valid tokens and divides
once by the global count, so accumulation and processes do not change the loss.

The names of the choices (`KINDS`, `TOPK_MODES`) come from the torch-free `losses/names.py`; the functions are
imported on first use, so the recipe schema can import `distill.losses.names` without loading torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from distill.losses.names import DIVERGENCES as KINDS
from distill.losses.names import TOPK_MODES

if TYPE_CHECKING:
    from distill.losses.cross_entropy import cross_entropy_sum
    from distill.losses.divergences import DivergenceSpec
    from distill.losses.functional import divergence, token_divergence

__all__ = ["KINDS", "TOPK_MODES", "DivergenceSpec", "cross_entropy_sum", "divergence", "token_divergence"]

_LAZY = {"cross_entropy_sum": "cross_entropy", "DivergenceSpec": "divergences", "divergence": "functional",
         "token_divergence": "functional"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"distill.losses.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
