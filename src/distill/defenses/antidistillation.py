"""Antidistillation sampling (Savani, Trockman, Feng, Schwarzschild, Robey, Finzi, Kolter 2025, "Antidistillation
Sampling", arXiv 2504.13146): bend the teacher's sampling towards tokens that would *hurt* a student trained on them.

With a proxy student θ and g = ∇θ ℓ(θ), the gradient of the proxy's loss ℓ on held-out teacher traces (mean NLL of
the completion tokens; `distill defenses gradient`, `gradient.py`), one SGD step of the student on a token x moves
θ by η·∇θ log p(x; θ), which changes ℓ by about η·⟨∇θ log p(x; θ), g⟩ =: η·Δ(x). The defended logits are

    z = z_teacher / τ + λ · Δ,    Δ ≈ (z⁺ − z⁻) / (2ε),   z± = the proxy's logits at θ ± ε·g

(the finite difference of log p is that of the logits: the normalisers only shift a row). **Sign:** Δ(x) > 0 means
training on x would *raise* the proxy's held-out loss, and λ > 0 favours such tokens — the authors' sign
(locuslab/antidistillation-sampling, `gentraces.py`: `scores + λ/(2ε)·(student⁺ − student⁻)`).

**Temperature.** τ divides the teacher's logits inside the processor; the request's (or generate's) temperature T
then divides the whole defended logit, as every processor's output: a sample is drawn from
softmax((z_teacher/τ + λΔ) / T) and the reported log-probs are log-softmax(z_teacher/τ + λΔ). So the paper's
formula, with its sampling temperature τ, is τ in the key file and T = 1 in requests (or `exposure.temperature: 1`).
The authors' released code applies its τ after the processor (softmax((z + λΔ)/τ), i.e. our τ = 1 and T = their τ);
the Distillation Game's code multiplies λ by T to keep the term at λΔ. We keep the processor independent of the
request, say so, and let the key file's τ carry the paper's meaning.

The gradient file is checked against the proxy it is used with: the same parameters (names, shapes) and the same
weights (sha256 recorded when it was computed) — a gradient of another model is noise.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from distill.defenses.proxy import ProxyProcessor, ProxyRunner
from distill.errors import ModelError

GRADIENT_FORMAT = "distill-antidistillation-gradient"
GRADIENT_VERSION = "1"


def read_gradient(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata header of a gradient file; one line when it is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"antidistillation.gradient: no such file: {path} (write one with `distill defenses "
                         "gradient`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 — safe_open has no iterator
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"antidistillation.gradient: {path} is not a safetensors file ({exc})") from None
    if meta.get("format") != GRADIENT_FORMAT or meta.get("version") != GRADIENT_VERSION:
        raise ModelError(f"antidistillation.gradient: {path} is not a gradient file written by `distill defenses "
                         f"gradient` (format {meta.get('format')!r}, version {meta.get('version')!r})")
    return tensors, meta


def check_gradient(path: str | Path, meta: dict[str, str], grads: dict[str, torch.Tensor], proxy: Any,
                   proxy_name: str) -> None:
    """The gradient must be of this proxy: every tensor a parameter of the same shape, and the same weights."""
    from distill.teachers.cache.fingerprint import weights_sha256

    params = dict(proxy.named_parameters())
    unknown = sorted(set(grads) - set(params))
    if unknown:
        raise ModelError(f"antidistillation.gradient: {path} holds {len(unknown)} tensors that are no parameter of "
                         f"the proxy {proxy_name!r} (e.g. {unknown[0]!r}); it was computed for another model")
    bad = next((n for n in grads if tuple(grads[n].shape) != tuple(params[n].shape)), None)
    if bad is not None:
        raise ModelError(f"antidistillation.gradient: {path}: {bad} has shape {tuple(grads[bad].shape)}, the "
                         f"proxy's {tuple(params[bad].shape)}; it was computed for another model")
    if meta.get("proxy_weights_sha256") != weights_sha256(proxy):
        raise ModelError(f"antidistillation.gradient: {path} was computed for the proxy {meta.get('proxy')!r} with "
                         f"other weights than {proxy_name!r} has now; compute it again with `distill defenses "
                         f"gradient --proxy {proxy_name}`")


def perturbed_copies(proxy: Any, grads: dict[str, torch.Tensor], eps: float) -> tuple[Any, Any]:
    """θ + ε·g and θ − ε·g, two independent copies (the proxy itself is left as it was); in float32, whatever the
    proxy's dtype, so that the ±ε·g survives."""
    plus, minus = copy.deepcopy(proxy).float(), copy.deepcopy(proxy).float()
    with torch.no_grad():
        for model, sign in ((plus, 1.0), (minus, -1.0)):
            for name, param in model.named_parameters():
                if name in grads:
                    param.add_(grads[name].to(param.device, torch.float32), alpha=sign * eps)
    return plus, minus


class AntidistillationProcessor(ProxyProcessor):
    """z_teacher/τ + λ·(z⁺ − z⁻)/(2ε), with z± from the two perturbed proxy copies following the engine's batch."""

    name = "antidistillation"

    def __init__(self, plus: Any, minus: Any, n_tokens: int, *, lam: float, eps: float, tau: float):
        super().__init__(n_tokens)
        if eps <= 0 or tau <= 0 or lam < 0:
            raise ValueError("antidistillation needs eps > 0, tau > 0 and lam ≥ 0")
        self.lam, self.eps, self.tau = lam, eps, tau
        self.runners = [ProxyRunner(plus, n_tokens), ProxyRunner(minus, n_tokens)]

    def combine(self, teacher: torch.Tensor, proxies: list[torch.Tensor]) -> torch.Tensor:
        plus, minus = proxies
        return teacher / self.tau + self.lam * (plus - minus) / (2.0 * self.eps)


def antidistillation_from_key(key: Any, proxy: Any, n_tokens: int) -> AntidistillationProcessor:
    """The processor of a key file's `antidistillation` section, its gradient file read and checked."""
    grads, meta = read_gradient(key.gradient)
    check_gradient(key.gradient, meta, grads, proxy, key.proxy)
    plus, minus = perturbed_copies(proxy, grads, key.eps)
    return AntidistillationProcessor(plus, minus, n_tokens, lam=key.lam, eps=key.eps, tau=key.tau)
