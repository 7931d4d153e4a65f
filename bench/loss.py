"""The loss alone: chunked fused-linear path vs the plain one (full logits), forward + backward, and both against
the floor of the matrix multiplies they cannot avoid.

Default shape: 8,192 tokens, hidden 576, vocabulary 49,152 (SmolLM2's), forward KL against a dense teacher given
as hidden states + its own head, with cross-entropy mixed in as in training. Peak memory is what the loss adds on top
of its inputs (CPU: peak RSS minus the RSS before the loss; CUDA: peak allocated minus allocated before). Each
contender runs in its own process; contenders alternate; the summary gives medians and per-repetition ratios.

The GEMM floor (contenders `gemm3` and `gemm4`) runs the matrix multiplies alone, chunk by chunk at the chunked path's
chunk size, with nothing between them: the student's logits h·Wᵀ, the gradients g·W (hidden states) and gᵀ·h (head)
— `gemm3`, the three the issue names — and, in `gemm4`, also the teacher's logits h_t·W_tᵀ, which a teacher given as
hidden states needs as well. `time_vs_gemm_floor` = chunked / gemm4 is what the loss's elementwise work (softmaxes,
the gradient's formula, the scatter) costs on top; `time_vs_gemm3` is the same against the issue's three.

`compiled` is the chunked path with its elementwise work fused by torch.compile (`objective.compiled`,
losses/compiled.py); `compiled_time_vs_gemm_floor` and `compiled_vs_chunked` report it. Every contender takes one
untimed step at the measured shape first, so compiling is not timed.

    python bench/loss.py                      # CPU, fp32
    python bench/loss.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import harness
from harness import REPO, alternate, emit, median_of, peak_rss_mb, provenance, ratios, reset_peak_rss, worker_main

CONTENDERS = ("chunked", "compiled", "plain", "gemm3", "gemm4")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--chunk-size", type=int, default=0, help="0: the trainer's automatic size for the vocab")
    parser.add_argument("--kind", default="forward_kl")
    parser.add_argument("--iters", type=int, default=3, help="timed forward+backward passes after one warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    return parser.parse_args(argv)


def _current_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def run(contender: str, args: argparse.Namespace) -> dict:
    from distill.losses import DivergenceSpec
    from distill.losses.fused_linear import (
        LossSettings,
        LossWeights,
        TeacherHidden,
        auto_chunk_size,
        fused_linear_loss,
        reference_linear_loss,
    )
    from distill.losses.lm_head import LMHead

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    chunk_size = args.chunk_size or auto_chunk_size(args.vocab)  # resolved here only to report it

    def problem(tokens: int, vocab: int):
        g = torch.Generator().manual_seed(0)
        hidden = torch.randn(tokens, args.hidden, generator=g).to(device, dtype).requires_grad_()
        head = LMHead((torch.randn(vocab, args.hidden, generator=g) * 0.05).to(device, dtype).requires_grad_())
        teacher = TeacherHidden(torch.randn(tokens, args.hidden, generator=g).to(device, dtype),
                                LMHead((torch.randn(vocab, args.hidden, generator=g) * 0.05).to(device, dtype)))
        targets = torch.randint(0, vocab, (tokens,), generator=g).to(device)
        settings = LossSettings(spec=DivergenceSpec(kind=args.kind), temperature=1.0,
                                weights=LossWeights(ce=0.5, kd=0.5), vocab_size=vocab,
                                compiled=contender == "compiled")
        return hidden, head, targets, teacher, settings

    def gemms(hidden, head, teacher, with_teacher: bool) -> float:
        """The multiplies alone, chunk by chunk: logits, (teacher logits), grad hidden, grad head."""
        weight, grad_weight, total = head.weight.detach(), torch.zeros_like(head.weight), 0.0
        grad_hidden = torch.empty_like(hidden)
        with torch.no_grad():
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start:start + chunk_size].detach()
                g = h @ weight.t()  # stands in for ∂loss/∂logits: same shape, no elementwise work
                if with_teacher:
                    g += teacher.hidden[start:start + chunk_size] @ teacher.head.weight.t()
                grad_hidden[start:start + chunk_size] = g @ weight
                grad_weight.addmm_(g.t(), h)
                total += float(g[0, 0])
        return total

    def step(hidden, head, targets, teacher, settings) -> float:
        if contender in ("gemm3", "gemm4"):
            return gemms(hidden, head, teacher, contender == "gemm4")
        if contender in ("chunked", "compiled"):
            total = fused_linear_loss(hidden, head, targets, teacher, settings, chunk_size)[0]
        else:
            total = reference_linear_loss(hidden, head, targets, teacher, settings)[0]
        total.backward()
        hidden.grad = head.weight.grad = None
        return total.item()

    step(*problem(64, 512))  # initialise the libraries' one-off state outside the measured window
    inputs = problem(args.tokens, args.vocab)
    step(*inputs)  # and at the measured shape (the compiler specialises on it)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    before = _current_memory(device)
    value = step(*inputs)  # the measured pass (memory); timing follows
    peak = max(_peak_memory(device) - before, 0.0)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"loss": value, "time_s": statistics.median(times), "peak_mem_mb": round(peak, 1),
            "tokens": args.tokens, "vocab": args.vocab, "hidden": args.hidden, "chunk_size": chunk_size,
            "device": args.device,
            "dtype": args.dtype}


def main() -> None:
    args = parse(__import__("sys").argv[1:])
    passthrough = [f"--tokens={args.tokens}", f"--hidden={args.hidden}", f"--vocab={args.vocab}",
                   f"--chunk-size={args.chunk_size}", f"--kind={args.kind}", f"--iters={args.iters}",
                   f"--device={args.device}", f"--dtype={args.dtype}"]
    results = alternate(REPO / "bench" / "loss.py", CONTENDERS, args.repeats, passthrough)
    chunked, plain = results["chunked"], results["plain"]
    mem, tim = ratios(chunked, plain, "peak_mem_mb"), ratios(chunked, plain, "time_s")
    floor, floor3 = ratios(chunked, results["gemm4"], "time_s"), ratios(chunked, results["gemm3"], "time_s")
    plain_floor = ratios(plain, results["gemm4"], "time_s")
    compiled_floor = ratios(results["compiled"], results["gemm4"], "time_s")
    compiled_vs = ratios(results["compiled"], chunked, "time_s")
    emit({"summary": "loss", "peak_mem_ratio": harness.median_ratio(mem), "time_ratio": harness.median_ratio(tim),
          "time_vs_gemm_floor": harness.median_ratio(floor), "time_vs_gemm3": harness.median_ratio(floor3),
          "plain_time_vs_gemm_floor": harness.median_ratio(plain_floor),
          "compiled_time_vs_gemm_floor": harness.median_ratio(compiled_floor),
          "compiled_vs_chunked": harness.median_ratio(compiled_vs),
          "compiled_time_vs_gemm_floor_per_rep": compiled_floor, "compiled_vs_chunked_per_rep": compiled_vs,
          "peak_mem_ratio_per_rep": mem, "time_ratio_per_rep": tim, "time_vs_gemm_floor_per_rep": floor,
          **{name: {key: median_of(results[name], key) for key in ("time_s", "peak_mem_mb")} for name in CONTENDERS},
          "goal": {"peak_mem_ratio_max": 0.15, "time_ratio_max": 1.0, "time_vs_gemm_floor_max": 1.15,
                   "met": harness.median_ratio(mem) <= 0.15 and harness.median_ratio(tim) <= 1.0
                   and harness.median_ratio(floor) <= 1.15,
                   "met_compiled": harness.median_ratio(compiled_floor) <= 1.15},
          "setting": {k: v for k, v in vars(args).items() if k != "repeats"}, "provenance": provenance()})


if __name__ == "__main__":
    if not worker_main({c: (lambda a, c=c: run(c, a)) for c in CONTENDERS}, parse):
        main()
