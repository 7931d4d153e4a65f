"""The chunked loss's elementwise work fused by `torch.compile`: cross-entropy with a dense teacher's forward KL.

Per chunk of C tokens × V logits, the eager closed form (`fused_linear._closed_form_chunk`) makes about fifteen
passes over C × V values — two log-softmaxes, their exponentials, the floors, the products, the gradient's updates —
each reading and writing memory. On the benchmark's shape (341 × 49,152, fp32, two CPU cores) that elementwise work
takes as long as the chunk's matrix multiplies. Compiled, the same formula becomes a few loops that read each
logit a handful of times and write the gradient once: about half the time (bench/loss.py, row `compiled`).

The formula is the eager one, written as pure functions of the inputs so that the compiler can fuse it:

    ∂/∂z = w_ce · (softmax(z) − onehot(target)) + (w_kd / T) · (softmax(z / T) − softmax(t / T))

with the value KL(P_T ‖ Q_T) = Σ p · (log p − log q), both logs floored at LOG_FLOOR as in `divergences.kl`.
The eager path is its twin (tests/test_compiled_loss.py holds them to 1e-5). Only this case — no teacher, or a
dense teacher with forward KL — is compiled: it is what a live teacher trains with; the partial signals (top-k,
sampled) gather and scatter on a few ids, where there is little to fuse, and stay eager.

Shapes: the compiler specialises on the chunk's shape; the last, shorter chunk of a batch compiles once more, and
after that shapes are treated as dynamic. The weights and the temperature are Python numbers, constant during
training, so they are baked in.
"""

from __future__ import annotations

from functools import cache

import torch
from torch._dynamo.exc import BackendCompilerFailed

from distill.losses.divergences import LOG_FLOOR


def _ce_parts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log softmax(z), onehot(target) as a mask, Σ CE)."""
    log_z = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    onehot = torch.arange(logits.shape[-1], device=logits.device)[None, :] == targets[:, None]
    return log_z, onehot, -torch.where(onehot, log_z, 0.0).sum()


def ce_chunk(logits: torch.Tensor, targets: torch.Tensor, w_ce: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ CE, 0, ∂(w_ce · Σ CE)/∂z): a chunk with no teacher."""
    log_z, onehot, ce = _ce_parts(logits, targets)
    return ce, torch.zeros((), device=logits.device), w_ce * (log_z.exp() - onehot.float())


def forward_kl_chunk(logits: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, w_ce: float, w_kd: float,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Σ CE, Σ KL(P_T ‖ Q_T), ∂(w_ce · CE + w_kd · KL)/∂z) for a dense teacher's logits `teacher`."""
    log_z, onehot, ce = _ce_parts(logits, targets)
    t = teacher.float()
    if temperature == 1.0:
        log_q, log_p = log_z, t - torch.logsumexp(t, dim=-1, keepdim=True)
    else:
        s, u = logits / temperature, t / temperature
        log_q = s - torch.logsumexp(s, dim=-1, keepdim=True)
        log_p = u - torch.logsumexp(u, dim=-1, keepdim=True)
    p = log_p.exp()
    kd = (p * (log_p.clamp(min=LOG_FLOOR) - log_q.clamp(min=LOG_FLOOR))).sum()
    grad = w_ce * (log_z.exp() - onehot.float()) + (w_kd / temperature) * (log_q.exp() - p)
    return ce, kd, grad


@cache
def compiled(name: str):
    """The compiled twin of `ce_chunk` or `forward_kl_chunk`, built once per process on first use. A compiler that
    cannot build it (on CPU, inductor needs a C++ compiler) fails the first step with what to change, not with the
    compiler's traceback alone."""
    fn = torch.compile({"ce": ce_chunk, "forward_kl": forward_kl_chunk}[name], fullgraph=True)

    def run(*args):
        try:
            return fn(*args)
        except BackendCompilerFailed as exc:
            raise RuntimeError(f"objective.compiled: torch.compile could not build the fused loss ({type(exc).__name__}"
                               f": {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); on CPU it needs a "
                               "C++ compiler (g++ or clang). Install one, or set objective.compiled: false (the eager "
                               "path computes the same loss)") from exc

    return run
