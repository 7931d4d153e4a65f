"""The projection from a model's last hidden states to its logits, as the model itself applies it.

The chunked loss and the teacher cache never ask a model for its logits: they take its last hidden states and apply
this head themselves, a chunk of positions at a time. `check_head` proves at start-up that doing so reproduces the
model's own logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from distill.errors import ModelError


@dataclass
class LMHead:
    """logits = softcap(scale · (hidden @ weightᵀ + bias)).

    `scale` covers Cohere's `logit_scale` and Granite's `1 / logits_scaling`; `softcap` is Gemma 2/3's
    `final_logit_softcapping` (cap · tanh(logits / cap))."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None

    @classmethod
    def of(cls, model: PreTrainedModel) -> LMHead:
        head = model.get_output_embeddings()
        config = model.config
        scale = float(getattr(config, "logit_scale", None) or 1.0)
        if getattr(config, "logits_scaling", None):
            scale /= float(config.logits_scaling)
        softcap = getattr(config, "final_logit_softcapping", None)
        return cls(weight=head.weight, bias=getattr(head, "bias", None), scale=scale, softcap=softcap or None)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """The raw projection hidden @ weightᵀ + bias, in the inputs' dtype."""
        return F.linear(hidden, self.weight, self.bias)

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """Scale and soft-cap raw logits, in fp32."""
        logits = raw.float()
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.finish(self.project(hidden))


def last_hidden_states(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The model's final hidden states (after its final norm): what its LM head projects. `position_ids` (with no
    attention mask): packed documents, each attending only to itself (`Batch.model_inputs`)."""
    decoder = model.get_decoder()
    extra = {} if position_ids is None else {"position_ids": position_ids}
    return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).last_hidden_state


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
