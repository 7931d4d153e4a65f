"""Product of Experts, the teacher's defense of "The Distillation Game" (Allouah, Haghifam, Koyejo, Shokri 2026,
arXiv 2605.22737): sample from the teacher's logits mixed with a proxy student's,

    z = (1 − γ)·z_teacher + γ·z_proxy,

a product of the two distributions (p_teacher^(1−γ) · p_proxy^γ, renormalised). The proxy is a small model of the
teacher's family, standing in for the student a distiller would train: the answer keeps the teacher's knowledge where
the two agree and leans towards what the small model already predicts, which carries less signal to a student.

As in the authors' code (github ysfalh/distillation-game, `ProductOfExpertsLogitsProcessor`), the mixture is of raw
logits and the sampling temperature is applied after it: a request at temperature T samples softmax(z / T). Their
code takes γ in [0, 1]; the key file allows γ > 1 (subtracting the teacher's share), which the paper's sweeps reach.
"""

from __future__ import annotations

from typing import Any

import torch

from distill.defenses.proxy import ProxyProcessor, ProxyRunner


class PoEProcessor(ProxyProcessor):
    name = "poe"

    def __init__(self, proxy: Any, n_tokens: int, gamma: float):
        super().__init__(n_tokens)
        if gamma < 0:
            raise ValueError("gamma must be ≥ 0")
        self.gamma = gamma
        self.runners = [ProxyRunner(proxy, n_tokens)]

    def combine(self, teacher: torch.Tensor, proxies: list[torch.Tensor]) -> torch.Tensor:
        return (1.0 - self.gamma) * teacher + self.gamma * proxies[0]
