"""Objectives whose loss is a token-level reweighted log-likelihood (`losses/reweighted.py`): on-policy reverse KL
by its sampled-token estimator (`onpolicy`, `estimator: sampled`) and Hybrid Policy Distillation (`hpd`).

    loss = α · CE(targets) + (1 − α) · Σ −w · log q(token)        per valid position; w from a rule, detached

The targets are whatever the batch holds at each position — data tokens, or the student's own where the batch
source sampled them — so the same objective is HPD's off-policy form (λ = 0) and its on-policy form (λ = 1). HPD also
draws one token from the student at every position, by the uniform the batch source put there (`Batch.draws`), so a
resume or another process count draws the same token. No T² factor: these weights are not softened targets.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from distill.data.batch import Batch
from distill.errors import RecipeError
from distill.losses import reweighted
from distill.losses.fused_linear import teacher_rows
from distill.losses.lm_head import LMHead, last_hidden_states
from distill.losses.signals import PARTIAL_SIGNALS, TeacherSignal
from distill.objectives.pieces import LossPieces
from distill.recipe.objective import HPDConfig, OnPolicyConfig

RULES = {"hpd": (reweighted.hpd, reweighted.HPD_TERMS),
         "sampled": (reweighted.sampled_reverse_kl, reweighted.SAMPLED_REVERSE_KL_TERMS)}


class ReweightedObjective(nn.Module):
    def __init__(self, student: PreTrainedModel, cfg: OnPolicyConfig | HPDConfig, vocab_size: int,
                 with_teacher: bool):
        super().__init__()
        if not with_teacher:
            raise RecipeError(f"objective.kind: {cfg.kind} needs a teacher to weigh the student's tokens")
        self.student, self.cfg, self.vocab_size = student, cfg, vocab_size
        self.rule, self.term_names = RULES["hpd" if isinstance(cfg, HPDConfig) else "sampled"]

    def forward(self, batch: Batch, signal: TeacherSignal | None = None) -> LossPieces:
        """`signal`: the teacher's whole distribution at each valid target (a live teacher: hidden states on the
        chunked path, logits on the reference path)."""
        if signal is None or isinstance(signal, PARTIAL_SIGNALS):
            raise RecipeError(f"objective.kind: {self.cfg.kind} needs the teacher's whole distribution at tokens the "
                              "student draws; a top-k teacher (a cache or an API) may not hold them. Use a live "
                              "teacher.model")
        targets, mask = batch.targets()
        draws = None if batch.draws is None else batch.draws[:, :-1][mask]
        cfg = self.cfg
        weights = {"temperature": cfg.temperature, "ce_weight": cfg.alpha, "rule_weight": 1.0 - cfg.alpha}
        if cfg.implementation == "reference":
            logits = self.student(**batch.model_inputs(),
                                  use_cache=False).logits[:, :-1, :self.vocab_size][mask]
            rows = teacher_rows(signal, 0, len(logits), self.vocab_size)  # dense logits, from either form
            total, terms = reweighted.reweighted_loss_reference(logits, targets[mask], rows, draws, self.rule,
                                                                **weights)
        else:
            hidden = last_hidden_states(self.student, **batch.model_inputs())[:, :-1][mask]
            total, terms = reweighted.reweighted_loss(hidden, LMHead.of(self.student), targets[mask], signal, draws,
                                                      self.rule, len(self.term_names), vocab_size=self.vocab_size,
                                                      chunk_size=cfg.chunk_size, **weights)
        names = ("ce", cfg.kind, *self.term_names)
        return LossPieces(total, mask.sum(), dict(zip(names, terms.unbind(), strict=True)))
