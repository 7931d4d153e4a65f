"""Off-policy token distillation (Hinton): dataset tokens, the teacher's distribution at every position.

    loss = α · CE(labels) + (1 − α) · T² · D(P_teacher,T ‖ Q_student,T)

per valid token, where a token is valid when its label is not ignored and D is the recipe's divergence. The shift is
applied here: the state at position t predicts the token at t + 1. Logits are cut to the tokenizer's size, so models
whose embedding matrices are padded to different widths compare only real tokens.

The objective is an `nn.Module` that owns the student, so that under DDP the whole loss — including the LM head that
the chunked path applies outside the model's own forward — runs inside the wrapped forward and its gradients are
synchronised. The teacher is held but not registered: it is frozen, never wrapped, never optimised.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from distill.data.formatting import IGNORE_INDEX
from distill.errors import CacheError, ModelError
from distill.losses.divergences import DivergenceSpec
from distill.losses.fused_linear import (
    LossSettings,
    LossWeights,
    TeacherHidden,
    fused_linear_loss,
    weighted_loss,
)
from distill.losses.lm_head import LMHead
from distill.recipe import ObjectiveConfig
from distill.teachers.signal import TopKSignal


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for positions 0 … L−2 (each predicts the next token) and the mask of valid ones."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def loss_settings(cfg: ObjectiveConfig, vocab_size: int, with_teacher: bool) -> LossSettings:
    spec = DivergenceSpec(kind=cfg.divergence, beta=cfg.beta, alpha=cfg.skew_alpha, mu=cfg.akl_mu,
                          normalized=cfg.jsd_normalized)
    weights = (LossWeights(ce=cfg.alpha, kd=(1.0 - cfg.alpha) * cfg.temperature**2) if with_teacher
               else LossWeights(ce=1.0, kd=0.0))
    return LossSettings(spec=spec, temperature=cfg.temperature, weights=weights, vocab_size=vocab_size,
                        topk_mode=cfg.topk_mode)


def last_hidden_states(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
                       ) -> torch.Tensor:
    """The model's final hidden states (after its final norm): what its LM head projects."""
    decoder = model.get_decoder()
    return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def check_head(model: PreTrainedModel, field: str) -> None:
    """The chunked path recomputes logits as LMHead(last hidden state); make sure that is what the model does.

    Both passes run in eval mode (the caller's mode is restored): in train mode dropout draws other masks in each
    pass, and a student with dropout would be refused although its head is a plain projection."""
    device = next(model.parameters()).device
    ids = torch.arange(1, 9, device=device).unsqueeze(0) % model.config.vocab_size
    mask = torch.ones_like(ids)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).logits.float()
            got = LMHead.of(model).logits(last_hidden_states(model, ids, mask))
    finally:
        model.train(was_training)
    scale = max(1.0, expected.nan_to_num().abs().max().item())
    if not torch.allclose(got, expected, atol=1e-3 * scale, rtol=1e-3, equal_nan=True):  # NaN weights: a later error
        raise ModelError(f"{field}: this model's logits are not LM-head(last hidden state), so the chunked loss "
                         "cannot reproduce them; set objective.implementation: reference")


class OffPolicyObjective(nn.Module):
    def __init__(self, student: PreTrainedModel, teacher: PreTrainedModel | None, cfg: ObjectiveConfig,
                 vocab_size: int, topk_teacher: bool = False):
        """`topk_teacher`: the teacher arrives with each batch as a `TopKSignal` (from a cache), not as a model."""
        super().__init__()
        self.student = student
        self._teacher = (teacher,)  # a tuple: not a registered submodule
        self.cfg = cfg
        self.settings = loss_settings(cfg, vocab_size, (teacher is not None or topk_teacher) and cfg.alpha < 1.0)

    @property
    def teacher(self) -> PreTrainedModel | None:
        return self._teacher[0] if self.settings.weights.kd > 0.0 else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                teacher_signal: TopKSignal | None = None) -> dict[str, torch.Tensor]:
        """`teacher_signal`: the teacher's top-k at each valid target position, in `[:, :-1][mask]` order."""
        targets, mask = shifted_targets(labels)
        if teacher_signal is not None and teacher_signal.ids.shape[0] != int(mask.sum()):
            raise CacheError(f"teacher.cache: the cache holds {teacher_signal.ids.shape[0]} positions for this batch, "
                             f"the batch has {int(mask.sum())} targets; the cache does not belong to this data")
        if self.cfg.implementation == "reference":
            total, ce, kd = self._reference(input_ids, attention_mask, targets, mask, teacher_signal)
        else:
            hidden = last_hidden_states(self.student, input_ids, attention_mask)[:, :-1][mask]
            teacher = teacher_signal
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_hidden = last_hidden_states(self.teacher, input_ids, attention_mask)[:, :-1][mask]
                teacher = TeacherHidden(teacher_hidden, LMHead.of(self.teacher))
            total, ce, kd = fused_linear_loss(hidden, LMHead.of(self.student), targets[mask], teacher, self.settings,
                                              self.cfg.chunk_size)
        return {"total": total, "ce": ce, "kd": kd, "n_targets": mask.sum()}

    def _reference(self, input_ids, attention_mask, targets, mask, teacher_signal):
        """The plain path: full logits from the models' own forward, ordinary autograd."""
        vocab = self.settings.vocab_size
        logits = self.student(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        logits = logits[:, :-1, :vocab][mask]
        teacher_logits = teacher_signal
        if self.teacher is not None:
            with torch.no_grad():
                out = self.teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                teacher_logits = out.logits[:, :-1, :vocab][mask]
        return weighted_loss(logits, targets[mask], teacher_logits, self.settings)
