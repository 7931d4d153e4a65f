"""The one training loop: set-up → (resume) → steps → final student.

What varies by method — where sequences come from, which divergence, how terms are weighted — lives in the objective;
this loop only forms the batches of the plan, sums the loss pieces, divides once by the global number of valid
tokens, and steps the optimizer. It runs on one process or many under `accelerate launch` and gives the same
trajectory for the same recipe either way.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from distill.data.dataset import BatchPlan, collate, tokenize_data
from distill.errors import CheckpointError, TrainingError
from distill.models import (
    build_student,
    check_logit_width,
    check_same_vocab,
    load_teacher,
    load_tokenizer,
    output_width,
)
from distill.objectives.offpolicy import OffPolicyObjective, check_head
from distill.recipe import Recipe, dump_recipe, validate_recipe
from distill.teachers.cache.build import recipe_setup
from distill.teachers.cache.store import TeacherCache
from distill.training import checkpoint
from distill.training.metrics import MetricsLog

# Training fields that may differ on --resume. Only max_steps changes the computation: the cosine schedule is
# re-shaped from the resumed step on to end at the new length (used to extend a finished run).
RESUMABLE_CHANGES = {"max_steps", "save_every", "log_every", "keep_checkpoints"}


def prepare_run_dir(recipe: Recipe, resume: bool, overwrite: bool) -> Path | None:
    """Check the run folder; return the checkpoint to resume from, if any."""
    run_dir = Path(recipe.training.output_dir)
    existing = checkpoint.list_checkpoints(run_dir / "checkpoints")
    if resume:
        if not existing:
            return None
        latest = existing[-1]
        _check_resumable(recipe, latest)
        return latest
    if overwrite:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif existing or (run_dir / "student").exists():
        raise CheckpointError(
            f"training.output_dir: {run_dir} already holds a run; pass --resume to continue it, --overwrite to "
            "start over, or choose another output_dir"
        )
    return None


def _check_resumable(recipe: Recipe, ckpt: Path) -> None:
    import yaml

    saved = validate_recipe(yaml.safe_load((ckpt / "recipe.yaml").read_text()), source=str(ckpt / "recipe.yaml"))
    old, new = saved.model_dump(mode="json"), recipe.model_dump(mode="json")
    for section in (old, new):
        for key in RESUMABLE_CHANGES:
            section["training"].pop(key)
    diffs = [f"{section}.{key}" for section in new if isinstance(new[section], dict)
             for key in set(new[section]) | set(old.get(section) or {})
             if (old.get(section) or {}).get(key) != new[section].get(key)]
    diffs += [key for key in new if not isinstance(new[key], dict) and old.get(key) != new[key]]
    if diffs:
        raise CheckpointError(f"--resume: the recipe differs from the one {ckpt} was trained with in "
                              f"{', '.join(sorted(diffs))}; restore it or start a new output_dir")


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run the recipe; returns the folder of the final student."""
    accelerator = Accelerator(mixed_precision={"fp32": "no"}.get(recipe.training.precision, recipe.training.precision))
    main = accelerator.is_main_process
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise TrainingError(f"the launcher started {launched} processes but accelerate sees "
                            f"{accelerator.num_processes}; on a CPU use `accelerate launch --cpu --num_processes N`")
    run_dir = Path(recipe.training.output_dir)
    ckpt_root = run_dir / "checkpoints"
    resume_from = prepare_run_dir(recipe, resume, overwrite) if main else None
    accelerator.wait_for_everyone()
    if not main:
        resume_from = prepare_run_dir(recipe, resume=True, overwrite=False) if resume else None
    recipe_yaml = dump_recipe(recipe)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(recipe_yaml)

    # --- models, tokenizer and data (built-ins are materialised by the main process first)
    set_seed(recipe.seed)
    t = recipe.teacher
    from_cache = t is not None and t.cache is not None and recipe.objective.alpha < 1.0
    # with a cache, the teacher model is loaded only when the student's layers are copied from it
    need_model = t is not None and t.model is not None and (not from_cache or recipe.student.from_teacher is not None)
    with accelerator.main_process_first():
        tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
        teacher = load_teacher(t) if need_model else None
        student = build_student(recipe, tokenizer, teacher)
        data = tokenize_data(recipe.data, tokenizer)
    cache = None
    if from_cache:  # refused unless built for this tokenizer, data, k, temperature (and teacher, when loaded)
        cache = TeacherCache.open(t.cache)
        cache.check_setup(recipe_setup(recipe, tokenizer, data, teacher))
        teacher = None  # the signal comes from the cache; the model only initialised the student
    if recipe.student.model is not None and recipe.student.model != recipe.tokenizer_source:
        s = recipe.student
        check_same_vocab(tokenizer, load_tokenizer("student.model", s.model, s.revision, s.trust_remote_code))
    vocab_size = len(tokenizer)
    check_logit_width("student", output_width(student), vocab_size)
    if teacher is not None:
        check_logit_width("teacher", output_width(teacher), vocab_size)
    if recipe.objective.alpha >= 1.0:
        teacher = None  # the baseline needs no teacher; it may have served only to initialise the student
    elif teacher is not None:
        teacher.to(accelerator.device)
    if recipe.objective.implementation == "chunked":
        for field, model in (("student", student), ("teacher.model", teacher)):
            if model is not None:
                check_head(model, field)
    cfg = recipe.training
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable()
        student.config.use_cache = False
    plan = BatchPlan(len(data.examples), cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes, recipe.seed)
    if cache is not None:
        cache.check_covers(plan.visited(cfg.max_steps))

    # --- optimizer, schedule, and state to resume
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps, min_lr_rate=cfg.min_lr_ratio
    )
    objective = OffPolicyObjective(student, teacher, recipe.objective, vocab_size, topk_teacher=cache is not None)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    objective.train()
    state = checkpoint.TrainState(step=0, examples_seen=0, tokens_seen=0, world_size=accelerator.num_processes)
    if resume_from is not None:
        state = checkpoint.load(resume_from, student, optimizer, scheduler, accelerator.process_index)
        state.world_size = accelerator.num_processes
        if main:
            accelerator.print(f"resuming from {resume_from} (step {state.step})")
    elif resume and main:
        accelerator.print(f"no checkpoint in {ckpt_root}; starting from step 0")
    metrics = MetricsLog(run_dir, state.step) if main else None

    # --- steps
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        disable=not main,
    )
    task = progress.add_task("train", total=cfg.max_steps, completed=state.step, loss="—", tps="—")
    world = accelerator.num_processes
    window_start, window_tokens = time.perf_counter(), 0
    with progress:
        for step in range(state.step, cfg.max_steps):
            global_targets = sum(data.examples[i].n_targets for i in plan.step_indices(step))
            # total, ce, kd, input tokens, teacher mass inside the cached top-k
            sums = torch.zeros(5, dtype=torch.float64, device=accelerator.device)
            micro_batches = plan.micro_indices(step, accelerator.process_index)
            for a, indices in enumerate(micro_batches):
                batch = collate([data.examples[i] for i in indices], tokenizer.pad_token_id)
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                signal = cache.signal(indices).to(accelerator.device) if cache is not None else None
                sync = a == len(micro_batches) - 1
                with accelerator.no_sync(objective) if not sync else nullcontext():
                    with accelerator.autocast():
                        pieces = objective(**batch, teacher_signal=signal)
                    # DDP averages gradients over processes; × world makes the result Σ / global tokens.
                    accelerator.backward(pieces["total"] * world / global_targets)
                mass = signal.captured_mass().sum() if signal is not None else torch.zeros((), device=sums.device)
                sums += torch.stack([pieces["total"].detach().double(), pieces["ce"].double(),
                                     pieces["kd"].double(), batch["attention_mask"].sum().double(), mass.double()])
            sums = accelerator.reduce(sums, reduction="sum")
            loss, ce, kd = (sums[:3] / global_targets).tolist()
            if not math.isfinite(loss):
                raise TrainingError(f"loss became {loss} at step {step + 1}; nothing was saved for this step. Lower "
                                    "training.lr, check the data, or resume from the last checkpoint")
            grad_norm = float(accelerator.clip_grad_norm_(objective.parameters(), cfg.max_grad_norm or math.inf))
            if not math.isfinite(grad_norm):
                raise TrainingError(f"gradient norm became {grad_norm} at step {step + 1}; nothing was saved for "
                                    "this step. Lower training.lr or enable max_grad_norm")
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            tokens = int(sums[3])
            state.step, state.examples_seen = done, state.examples_seen + cfg.batch_size
            state.tokens_seen += tokens
            window_tokens += tokens
            if main and (done % cfg.log_every == 0 or done == cfg.max_steps):
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / max(elapsed, 1e-9)
                row = {"loss": loss, "ce": ce, "kd": kd, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tps,
                       "tokens_seen": state.tokens_seen, "targets": global_targets}
                if cache is not None:
                    row["teacher_mass"] = float(sums[4]) / global_targets  # how much of the teacher the top-k holds
                metrics.log(done, row)
                progress.update(task, completed=done, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
                window_start, window_tokens = time.perf_counter(), 0
            if done % cfg.save_every == 0 or done == cfg.max_steps:
                _save_checkpoint(accelerator, ckpt_root, student, optimizer, scheduler, state, recipe_yaml,
                                 cfg.keep_checkpoints)

    # --- the final student, as a plain Hugging Face folder
    out = run_dir / "student"
    if main:
        tmp = run_dir / ".student.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        metrics.close()
        accelerator.print(f"student saved to {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _save_checkpoint(accelerator: Accelerator, root: Path, student, optimizer, scheduler,
                     state: checkpoint.TrainState, recipe_yaml: str, keep: int) -> None:
    tmp = checkpoint.temporary_path(root, state.step)
    if accelerator.is_main_process:
        checkpoint.begin(tmp)
        checkpoint.write_main(tmp, student, optimizer, scheduler, state, recipe_yaml)
    accelerator.wait_for_everyone()
    checkpoint.write_rank(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.commit(tmp, root, state.step, keep)
    accelerator.wait_for_everyone()

