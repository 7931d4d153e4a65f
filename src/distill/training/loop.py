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
from contextlib import ExitStack, nullcontext
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

from distill.atomic import share_permissions
from distill.data.dataset import BatchPlan, collate, tokenize_data
from distill.errors import CheckpointError, RecipeError, TrainingError
from distill.locking import FolderLock
from distill.models import (
    build_student,
    check_context_length,
    check_logit_width,
    check_same_vocab,
    count_parameters,
    load_teacher,
    load_tokenizer,
    output_width,
)
from distill.objectives.offpolicy import OffPolicyObjective, check_head
from distill.recipe import Recipe, dump_recipe
from distill.teachers.cache.build import check_cache_for
from distill.teachers.cache.store import TeacherCache
from distill.training import checkpoint
from distill.training.metrics import MetricsLog
from distill.training.run_dir import RECIPE, STUDENT, prepare_run_dir
from distill.training.schedule import make_scheduler, schedule_of

# A dynamic loss scaler (fp16) skips a step whose gradients overflowed and halves its scale; this many skips in a
# row means the scale cannot fix it (the model itself produces inf), and training stops.
MAX_SKIPPED_IN_A_ROW = 20


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run the recipe; returns the folder of the final student. The main process holds the run folder's lock
    throughout, so a second training into the same output_dir is refused instead of silently racing this one."""
    accelerator = _accelerator(recipe)
    run_dir = Path(recipe.training.output_dir)
    with ExitStack() as stack:
        if accelerator.is_main_process:  # creates the folder; refuses a file there or a folder it cannot write
            stack.enter_context(FolderLock(run_dir, "training.output_dir", CheckpointError))
        return _train(accelerator, recipe, resume, overwrite)


def _accelerator(recipe: Recipe) -> Accelerator:
    precision = recipe.training.precision
    accelerator = Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise TrainingError(f"the launcher started {launched} processes but accelerate sees "
                            f"{accelerator.num_processes}; on a CPU use `accelerate launch --cpu --num_processes N`")
    if precision == "fp16" and accelerator.device.type == "cpu":
        raise RecipeError("training.precision: fp16 needs a GPU (on a CPU accelerate would run the recipe in fp32 "
                          "without a word); use fp32, or bf16, which CPUs run, slowly")
    return accelerator


def _train(accelerator: Accelerator, recipe: Recipe, resume: bool, overwrite: bool) -> Path:
    main = accelerator.is_main_process
    run_dir = Path(recipe.training.output_dir)
    ckpt_root = run_dir / "checkpoints"
    resume_from = prepare_run_dir(recipe, resume, overwrite) if main else None
    accelerator.wait_for_everyone()
    if not main and resume:  # the main process has checked the folder; the others only need the checkpoint
        existing = checkpoint.list_checkpoints(ckpt_root)
        resume_from = existing[-1] if existing else None
    recipe_yaml = dump_recipe(recipe)
    if main:
        (run_dir / RECIPE).write_text(recipe_yaml)

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
    for field, model in (("student", student), ("teacher.model", teacher)):
        if model is not None:
            check_context_length(field, model.config, recipe.data.max_length)
    cache = None
    if from_cache:  # refused unless built for this tokenizer, data, k, temperature and teacher
        cache = TeacherCache.open(t.cache)
        check_cache_for(recipe, cache, tokenizer, data, None, teacher)
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
    if main:
        _print_summary(accelerator, recipe, data, student, teacher, cache)

    # --- optimizer, schedule, and state to resume
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    objective = OffPolicyObjective(student, teacher, recipe.objective, vocab_size, topk_teacher=cache is not None)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    objective.train()
    scaler = accelerator.scaler  # fp16: a dynamic loss scaler, which skips the steps whose gradients overflow
    state = checkpoint.TrainState(step=0, examples_seen=0, tokens_seen=0, world_size=accelerator.num_processes)
    if resume_from is not None:
        state = checkpoint.load(resume_from, student, optimizer, scheduler, accelerator.process_index, scaler)
        state.world_size = accelerator.num_processes
        _extend_schedule(accelerator, scheduler, optimizer, state.step, cfg.max_steps, cfg.warmup_steps)
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
    window_start, window_tokens, skipped_in_a_row = time.perf_counter(), 0, 0
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
            if not math.isfinite(grad_norm) and scaler is None:
                raise TrainingError(f"gradient norm became {grad_norm} at step {step + 1}; nothing was saved for "
                                    "this step. Lower training.lr or enable max_grad_norm")
            lr = scheduler.get_last_lr()[0]
            scale = scaler.get_scale() if scaler is not None else None
            optimizer.step()  # with a scaler: skipped when the gradients overflowed, and the scale is lowered
            skipped = accelerator.optimizer_step_was_skipped
            optimizer.zero_grad(set_to_none=True)
            if skipped:  # the schedule stays where it is: this batch taught nothing
                skipped_in_a_row += 1
                state.skipped_steps += 1
                if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    raise TrainingError(f"the fp16 gradients overflowed {skipped_in_a_row} steps in a row (loss scale "
                                        f"now {scaler.get_scale():g}) at step {step + 1}; the model itself produces "
                                        "inf. Use precision bf16 or fp32, or lower training.lr")
            elif not math.isfinite(grad_norm):
                raise TrainingError(f"gradient norm became {grad_norm} at step {step + 1} although the loss scaler "
                                    "accepted it; nothing was saved for this step. Lower training.lr")
            else:
                skipped_in_a_row = 0
                scheduler.step()

            done = step + 1
            tokens = int(sums[3])
            state.step, state.examples_seen = done, state.examples_seen + cfg.batch_size
            state.tokens_seen += tokens
            window_tokens += tokens
            if main and (done % cfg.log_every == 0 or done == cfg.max_steps or skipped):
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / max(elapsed, 1e-9)
                row = {"loss": loss, "ce": ce, "kd": kd, "lr": lr,
                       "grad_norm": grad_norm if math.isfinite(grad_norm) else None, "tokens_per_s": tps,
                       "tokens_seen": state.tokens_seen, "targets": global_targets}
                if cache is not None:
                    row["teacher_mass"] = float(sums[4]) / global_targets  # how much of the teacher the top-k holds
                if scaler is not None:
                    row.update(loss_scale=scale, skipped=skipped)
                metrics.log(done, row)
                progress.update(task, completed=done, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
                window_start, window_tokens = time.perf_counter(), 0
            if done % cfg.save_every == 0 or done == cfg.max_steps:
                _save_checkpoint(accelerator, ckpt_root, student, optimizer, scheduler, scaler, state, recipe_yaml,
                                 cfg.keep_checkpoints)

    # --- the final student, as a plain Hugging Face folder
    out = run_dir / STUDENT
    if main:
        tmp = run_dir / f".{STUDENT}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        share_permissions(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        metrics.close()
        skipped_note = f" ({state.skipped_steps} steps skipped by the fp16 loss scaler)" if state.skipped_steps else ""
        accelerator.print(f"student saved to {out}{skipped_note}; metrics in {run_dir / 'metrics.jsonl'}, "
                          f"checkpoints in {ckpt_root}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _print_summary(accelerator: Accelerator, recipe: Recipe, data, student, teacher, cache) -> None:
    """What is about to happen, before the first step: data (and what was dropped), models, processes."""
    cfg = recipe.training
    epochs = cfg.max_steps * cfg.batch_size / len(data.examples)
    dropped = (f", {data.dropped:,} dropped (nothing left to learn at data.max_length {recipe.data.max_length})"
               if data.dropped else "")
    source = f"cache {recipe.teacher.cache}" if cache is not None else (
        f"{count_parameters(teacher):,} parameters" if teacher is not None else "none (cross-entropy only)")
    accelerator.print(f"data: {len(data.examples):,} sequences ({data.format}), {data.n_targets:,} target tokens"
                      f"{dropped}; {cfg.max_steps} steps × {cfg.batch_size} = {epochs:.2f} epochs")
    accelerator.print(f"student: {count_parameters(student):,} parameters; teacher: {source}; "
                      f"{accelerator.num_processes} process(es), {cfg.precision} on {accelerator.device.type}")


def _extend_schedule(accelerator: Accelerator, scheduler, optimizer, step: int, max_steps: int, warmup: int) -> None:
    """A resume with another max_steps re-plans the learning rate from where the scheduler stands
    (training/schedule.py). The scheduler counts the steps taken, which with fp16 is fewer than `step`: the loss
    scaler's skipped steps did not move it."""
    schedule = schedule_of(scheduler)
    if schedule.planned_for == max_steps:
        return
    if max_steps < step:
        raise CheckpointError(f"training.max_steps: {max_steps}, but the checkpoint is at step {step} already; "
                              f"resume with max_steps ≥ {step}")
    position = scheduler.last_epoch
    how = schedule.extend(position, max_steps - step, max_steps, warmup)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * schedule(position)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    accelerator.print(f"schedule: the learning rate {how} from step {step} to end at step {max_steps}"
                      + (" (a warm restart: the run had finished decaying)" if how == "restarts" else ""))


def _save_checkpoint(accelerator: Accelerator, root: Path, student, optimizer, scheduler, scaler,
                     state: checkpoint.TrainState, recipe_yaml: str, keep: int) -> None:
    tmp = checkpoint.temporary_path(root, state.step)
    if accelerator.is_main_process:
        checkpoint.begin(tmp)
        checkpoint.write_main(tmp, student, optimizer, scheduler, state, recipe_yaml, scaler)
    accelerator.wait_for_everyone()
    checkpoint.write_rank(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.commit(tmp, root, state.step, keep)
    accelerator.wait_for_everyone()
