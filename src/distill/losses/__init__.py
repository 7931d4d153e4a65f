"""Loss pieces as pure functions. Each returns a *sum* over valid tokens; the training loop divides once by the
number of valid tokens of the whole accumulated, multi-process batch (so accumulation and processes do not change
the loss)."""

from distill.losses.cross_entropy import cross_entropy_sum
from distill.losses.divergences import DIVERGENCES, divergence, token_divergence

__all__ = ["DIVERGENCES", "cross_entropy_sum", "divergence", "token_divergence"]
