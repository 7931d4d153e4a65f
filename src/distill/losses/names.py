"""The names of the loss choices, written once here and imported by the losses and by the recipe schema.

No torch: the recipe imports these names to validate a recipe, and validating must stay fast (`distill train` on a
bad recipe fails before torch is loaded). The order is the order error messages and docs/recipe.md list them in.
"""

from __future__ import annotations

from typing import Literal, get_args

# the divergences of losses/divergences.py; P is the teacher, Q the student (docs/losses.md)
Divergence = Literal["forward_kl", "reverse_kl", "jsd", "interpolated_kl", "tvd", "skew_kl", "skew_reverse_kl", "akl"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)

# how a top-k teacher meets the student's full distribution (losses/support.py)
TopKMode = Literal["tail", "renormalize"]
TOPK_MODES: tuple[str, ...] = get_args(TopKMode)

# how a sampled teacher signal's draws become unbiased weights (losses/signals.py: importance_weights)
SampleWeights = Literal["counts", "inclusion"]
SAMPLE_WEIGHTS: tuple[str, ...] = get_args(SampleWeights)
