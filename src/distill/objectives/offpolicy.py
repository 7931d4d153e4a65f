"""Off-policy token distillation (Hinton): dataset tokens, the teacher's distribution at every position.

    loss = α · CE(labels) + (1 − α) · T² · D(P_teacher,T ‖ Q_student,T)

per valid token, where a token is valid when its label is not ignored and D is the recipe's divergence. The shift is
the batch's (`data/batch.py`): the state at position t predicts the token at t + 1. Logits are cut to the
tokenizer's size, so models whose embedding matrices are padded to different widths compare only real tokens. With
α = 1 (the cross-entropy baseline) no teacher signal is needed or used.

The objective is an `nn.Module` that owns the student, so that under DDP the whole loss — including the LM head that
the chunked path applies outside the model's own forward — runs inside the wrapped forward and its gradients are
synchronised. The teacher is not here at all: its signal arrives with each batch from a teacher source.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from distill.data.batch import Batch
from distill.losses.divergences import DivergenceSpec
from distill.losses.fused_linear import LossSettings, LossWeights, fused_linear_loss, weighted_loss
from distill.losses.lm_head import LMHead, last_hidden_states
from distill.losses.signals import TeacherSignal
from distill.objectives.pieces import LossPieces
from distill.recipe import OffPolicyConfig


def loss_settings(cfg: OffPolicyConfig, vocab_size: int, with_teacher: bool) -> LossSettings:
    spec = DivergenceSpec(kind=cfg.divergence, beta=cfg.beta, alpha=cfg.skew_alpha, mu=cfg.akl_mu,
                          normalized=cfg.jsd_normalized)
    weights = (LossWeights(ce=cfg.alpha, kd=(1.0 - cfg.alpha) * cfg.temperature**2) if with_teacher
               else LossWeights(ce=1.0, kd=0.0))
    return LossSettings(spec=spec, temperature=cfg.temperature, weights=weights, vocab_size=vocab_size,
                        topk_mode=cfg.topk_mode, compiled=cfg.compiled)


class OffPolicyObjective(nn.Module):
    def __init__(self, student: PreTrainedModel, cfg: OffPolicyConfig, vocab_size: int, with_teacher: bool):
        """`with_teacher`: a teacher signal comes with each batch (and α < 1 gives it weight)."""
        super().__init__()
        self.student = student
        self.cfg = cfg
        self.settings = loss_settings(cfg, vocab_size, with_teacher and cfg.alpha < 1.0)

    @property
    def needs_teacher(self) -> bool:
        return self.settings.weights.kd > 0.0

    def forward(self, batch: Batch, signal: TeacherSignal | None = None) -> LossPieces:
        """`signal`: the teacher at each valid target position, in `[:, :-1][valid]` order (ignored when α = 1)."""
        targets, mask = batch.targets()
        teacher = signal if self.needs_teacher else None
        if self.cfg.implementation == "reference":
            total, ce, kd = self._reference(batch, targets, mask, teacher)
        else:
            hidden = last_hidden_states(self.student, **batch.model_inputs())[:, :-1][mask]
            total, ce, kd = fused_linear_loss(hidden, LMHead.of(self.student), targets[mask], teacher, self.settings,
                                              self.cfg.chunk_size)
        return LossPieces(total, mask.sum(), {"ce": ce, "kd": kd})

    def _reference(self, batch: Batch, targets, mask, teacher: TeacherSignal | None):
        """The plain path: full logits from the student's own forward, ordinary autograd. The teacher comes as dense
        logits or top-k (`LiveTeacher.for_implementation` gives logits on this path)."""
        logits = self.student(**batch.model_inputs(), use_cache=False).logits
        logits = logits[:, :-1, :self.settings.vocab_size][mask]
        return weighted_loss(logits, targets[mask], teacher, self.settings)
