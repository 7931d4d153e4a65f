"""Cross-entropy on the labels, as a sum over valid tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ −log Q(target) over the given tokens. logits (N, V), targets (N,), all valid. Computed in fp32."""
    return F.cross_entropy(logits.float(), targets, reduction="sum")
