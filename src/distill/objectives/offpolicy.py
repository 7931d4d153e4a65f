"""Off-policy token distillation (Hinton): dataset tokens, the teacher's distribution at every position.

    loss = α · CE(labels) + (1 − α) · T² · D(P_teacher,T ‖ Q_student,T)

per valid token, where a token is valid when its label is not ignored. The shift is applied here: the logits at
position t predict the token at t + 1. Logits are cut to the tokenizer's size, so models whose embedding matrices are
padded to different widths compare only real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from distill.data.formatting import IGNORE_INDEX
from distill.losses import cross_entropy_sum, token_divergence
from distill.recipe import ObjectiveConfig


@dataclass
class LossSums:
    """Sums over the valid tokens of one micro-batch; the loop divides by the global token count once."""

    total: torch.Tensor  # carries the graph
    ce: torch.Tensor
    kd: torch.Tensor
    n_targets: int


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for logits[:, :-1] and the mask of valid ones."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def offpolicy_loss(student: PreTrainedModel, teacher: PreTrainedModel | None, batch: dict[str, torch.Tensor],
                   cfg: ObjectiveConfig, vocab_size: int) -> LossSums:
    targets, mask = shifted_targets(batch["labels"])
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1, :vocab_size][mask]
    ce = cross_entropy_sum(logits, targets[mask])
    if cfg.alpha >= 1.0 or teacher is None:
        kd = torch.zeros((), device=ce.device)
        total = ce
    else:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            teacher_logits = teacher_logits[:, :-1, :vocab_size][mask]
        kd = token_divergence(logits, teacher_logits, cfg.divergence, cfg.temperature).sum()
        total = cfg.alpha * ce + (1.0 - cfg.alpha) * cfg.temperature**2 * kd
    return LossSums(total=total, ce=ce.detach(), kd=kd.detach(), n_targets=int(mask.sum()))
