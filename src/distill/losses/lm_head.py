"""The projection from a model's last hidden states to its logits, as the model itself applies it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


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
