"""Loss pieces as pure functions.

`divergence` / `token_divergence` are the reference path: full student logits against dense teacher logits or a
top-k signal. `fused_linear_loss` is the memory-lean twin used for training: it starts from hidden states and the
LM-head weight and never holds a full logits tensor. The training loop sums pieces over valid tokens and divides
once by the global count, so accumulation and processes do not change the loss."""

from distill.losses.cross_entropy import cross_entropy_sum
from distill.losses.divergences import KINDS, DivergenceSpec
from distill.losses.functional import divergence, token_divergence
from distill.losses.support import TOPK_MODES

__all__ = ["KINDS", "TOPK_MODES", "DivergenceSpec", "cross_entropy_sum", "divergence", "token_divergence"]
