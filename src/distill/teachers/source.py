"""Teacher sources: where the teacher's signal for a batch comes from. The loop and the objectives never know which.

    signal(batch) -> TeacherSignal     rows = the batch's valid target positions, in `[:, :-1][valid]` order

Today's sources: a live Hugging Face model (this module) and a teacher cache on disk (`teachers/cache/source.py`).
An OpenAI-compatible endpoint or a teacher that scores sampled sequences is a third implementation of the same
two members; nothing else changes.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from transformers import PreTrainedModel

from distill.data.batch import Batch
from distill.losses.lm_head import LMHead, last_hidden_states
from distill.losses.signals import TeacherHidden, TeacherSignal
from distill.models import count_parameters


class TeacherSource(Protocol):
    description: str  # one line for the run summary: what the teacher is

    def signal(self, batch: Batch) -> TeacherSignal: ...


class LiveTeacher:
    """A frozen local model run on each batch, without gradients.

    `form`: "hidden" gives its last hidden states and LM head (`TeacherHidden`), which the chunked loss projects a
    chunk at a time; "logits" gives its dense logits cut to the tokenizer's `vocab_size` (padded embedding rows are
    not tokens), for the reference path."""

    def __init__(self, model: PreTrainedModel, vocab_size: int, form: Literal["hidden", "logits"]):
        self.model, self.vocab_size, self.form = model, vocab_size, form
        self.description = f"{count_parameters(model):,} parameters"

    @classmethod
    def for_implementation(cls, model: PreTrainedModel, vocab_size: int, implementation: str) -> LiveTeacher:
        """The form the objective's `implementation` consumes: hidden states for `chunked`, logits otherwise."""
        return cls(model, vocab_size, "hidden" if implementation == "chunked" else "logits")

    @torch.no_grad()
    def signal(self, batch: Batch) -> TeacherSignal:
        _, valid = batch.targets()
        if self.form == "hidden":
            hidden = last_hidden_states(self.model, **batch.model_inputs())[:, :-1][valid]
            return TeacherHidden(hidden, LMHead.of(self.model))
        out = self.model(**batch.model_inputs(), use_cache=False)
        return out.logits[:, :-1, :self.vocab_size][valid]
