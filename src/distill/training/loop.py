"""The one training loop: set-up → (resume) → steps → final student.

Three parts plug in, and the loop knows none of them by kind (training/setup.py builds them from the recipe):

    batch source    micro_batches(step) -> [Batch]        training/batches.py   (the data-set plan)
    teacher source  signal(batch) -> TeacherSignal        teachers/             (a live model, a cache)
    objective       objective(batch, signal) -> LossPieces   objectives/        (chosen by objective.kind)

Per step the loop counts the valid targets of the batches actually formed over every process (one all-reduce),
backpropagates each micro-batch's summed loss divided by that one global count, sums whatever named terms the
objective and the signal return for logging, and steps the optimizer. It runs on one process or many under
`accelerate launch` and gives the same trajectory for the same recipe either way.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator

from distill.atomic import write_folder
from distill.errors import CheckpointError, RecipeError, TrainingError
from distill.locking import FolderLock
from distill.losses.signals import signal_sums
from distill.models import count_parameters
from distill.objectives.registry import build_objective
from distill.progress import progress as progress_display
from distill.recipe import Recipe, dump_recipe
from distill.results.layout import BEST, CHECKPOINTS, METRICS, RECIPE, STUDENT
from distill.training import checkpoint
from distill.training.metrics import MetricsLog
from distill.training.run_dir import prepare_run_dir
from distill.training.schedule import keep_fused, make_optimizer, make_scheduler, schedule_of
from distill.training.setup import RunParts, build_parts
from distill.training.trackers import accelerate_trackers, ended_trackers, log_to_trackers, start_trackers
from distill.training.validation import BestTracker, Validator, save_best, teacher_model_of

TOKENS = "_input_tokens"  # summed beside the loss terms for throughput; never divided by the target count
# names a metrics row gives the loop's own values: an objective's or a signal's term may not take them
RESERVED = frozenset({"step", "loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen", "targets", "loss_scale",
                      "skipped", TOKENS})

# A dynamic loss scaler (fp16) skips a step whose gradients overflowed and halves its scale; this many skips in a
# row means the scale cannot fix it (the model itself produces inf), and training stops.
MAX_SKIPPED_IN_A_ROW = 20


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run the recipe; returns the folder of the final student. The main process holds the run folder's lock
    throughout, so a second training into the same output_dir is refused instead of silently racing this one; the
    trackers' runs end even when training crashes (marked failed where the tracker keeps a status)."""
    accelerator = _accelerator(recipe)
    run_dir = Path(recipe.training.output_dir)
    with ExitStack() as stack:
        if accelerator.is_main_process:  # creates the folder; refuses a file there or a folder it cannot write
            stack.enter_context(FolderLock(run_dir, "training.output_dir", CheckpointError))
        stack.enter_context(ended_trackers(accelerator))  # ended before the lock is released
        return _train(accelerator, recipe, resume, overwrite)


def _accelerator(recipe: Recipe) -> Accelerator:
    precision = recipe.training.precision
    trackers = accelerate_trackers(recipe.training.trackers)
    accelerator = Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision), log_with=trackers or None,
                              project_dir=recipe.training.output_dir if trackers else None)
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
    ckpt_root = run_dir / CHECKPOINTS
    resume_from = prepare_run_dir(recipe, resume, overwrite) if main else None
    accelerator.wait_for_everyone()
    if not main and resume:  # the main process has checked the folder; the others only need the checkpoint
        existing = checkpoint.list_checkpoints(ckpt_root)
        resume_from = existing[-1] if existing else None
    recipe_yaml = dump_recipe(recipe)
    if main:
        (run_dir / RECIPE).write_text(recipe_yaml)

    # --- models, data, the teacher source and the batch source (training/setup.py)
    parts = build_parts(recipe, accelerator)
    student, teacher, batches = parts.student, parts.teacher, parts.batches
    cfg = recipe.training
    if main:
        _print_summary(accelerator, recipe, parts)

    # --- optimizer, schedule, objective, and state to resume
    optimizer = make_optimizer(student.parameters(), cfg.lr, cfg.betas, cfg.weight_decay, accelerator.device,
                               loss_scaler=accelerator.scaler is not None)
    fused = optimizer.defaults["fused"]
    scheduler = make_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    objective = build_objective(student, recipe.objective, parts.vocab_size, with_teacher=teacher is not None)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    objective.train()
    scaler = accelerator.scaler  # fp16: a dynamic loss scaler, which skips the steps whose gradients overflow
    state = checkpoint.TrainState(step=0, examples_seen=0, tokens_seen=0, world_size=accelerator.num_processes)
    if resume_from is not None:
        state = checkpoint.load(resume_from, student, optimizer, scheduler, accelerator.process_index, scaler)
        keep_fused(optimizer, fused)
        state.world_size = accelerator.num_processes
        # a checkpoint from before batch sources records none: the plan stood at the checkpoint's step
        batches.load_state_dict(state.batches or {**batches.state_dict(), "next_step": state.step})
        if batches.next_step != state.step:
            raise CheckpointError(f"checkpoint {resume_from}: its batch source stands at step {batches.next_step}, "
                                  f"its training at step {state.step}; the checkpoint is inconsistent. Delete it to "
                                  "resume from an earlier one")
        _extend_schedule(accelerator, scheduler, optimizer, state.step, cfg.max_steps, cfg.warmup_steps)
        if main:
            accelerator.print(f"resuming from {resume_from} (step {state.step})")
    elif resume and main:
        accelerator.print(f"no checkpoint in {ckpt_root}; starting from step 0")
    metrics = MetricsLog(run_dir, state.step, tensorboard="tensorboard" in cfg.trackers) if main else None
    start_trackers(accelerator, recipe, run_dir)
    validator = (Validator(parts.validation, cfg.micro_batch_size, parts.tokenizer.pad_token_id)
                 if parts.validation else None)
    teacher_model = teacher_model_of(teacher)
    if cfg.keep_best in ("val_agreement", "val_kl") and teacher_model is None:
        raise RecipeError(f"training.keep_best: {cfg.keep_best} compares the student with a live teacher, which this "
                          "run does not load (a cache, an API, or alpha 1); use val_nll")
    best = BestTracker.from_state(cfg.keep_best, state.validation) if cfg.keep_best else None
    stopped_early = False

    # --- steps
    progress = progress_display("train", "loss {loss}", "{tps} tok/s", disable=not main)
    task = progress.add_task("train", total=cfg.max_steps, completed=state.step, loss="—", tps="—")
    world, device = accelerator.num_processes, accelerator.device
    window_start, window_tokens, skipped_in_a_row = time.perf_counter(), 0, 0
    with progress:
        for step in range(state.step, cfg.max_steps):
            micro_batches = [b.to(device) for b in batches.micro_batches(step)]
            if step + 1 < cfg.max_steps and hasattr(teacher, "prefetch") and hasattr(batches, "upcoming"):
                teacher.prefetch(batches.upcoming(step + 1))  # a cache decodes the next step during this one
            # the one division: valid targets of the batches actually formed, over every process
            local = torch.tensor(sum(b.n_targets() for b in micro_batches), dtype=torch.int64, device=device)
            global_targets = int(accelerator.reduce(local, reduction="sum"))
            if global_targets == 0:
                raise TrainingError(f"step {step + 1} has no target tokens to learn from in any of its sequences; "
                                    "check the data (or the batch source's settings)")
            sums: dict[str, torch.Tensor] = {}  # loss, the objective's terms, the signal's sums, input tokens
            for a, batch in enumerate(micro_batches):
                sync = a == len(micro_batches) - 1
                with accelerator.no_sync(objective) if not sync else nullcontext():
                    with accelerator.autocast():
                        signal = teacher.signal(batch) if teacher is not None else None
                        pieces = objective(batch, signal)
                    # DDP averages gradients over processes; × world makes the result Σ / global tokens.
                    accelerator.backward(pieces.total * world / global_targets)
                extra = signal_sums(signal)
                assert not (set(pieces.terms) | set(extra)) & RESERVED and not set(pieces.terms) & set(extra), \
                    f"term names {sorted(pieces.terms)} + {sorted(extra)} collide with each other or with {RESERVED}"
                reported = {n: torch.tensor(batch.logged.get(n, 0.0), device=device) for n in batches.logged}
                for name, value in {"loss": pieces.total.detach(), **pieces.terms, **extra, **reported,
                                    TOKENS: torch.tensor(batch.n_tokens(), device=device)}.items():
                    sums[name] = sums.get(name, 0.0) + value.double()
            names = list(sums)
            totals = accelerator.reduce(torch.stack([sums[n] for n in names]), reduction="sum")
            means = {n: float(v) / global_targets for n, v in zip(names, totals, strict=True) if n != TOKENS}
            loss = means.pop("loss")
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
            tokens = int(totals[names.index(TOKENS)])
            state.step, state.examples_seen = done, state.examples_seen + cfg.batch_size
            state.tokens_seen += tokens
            state.batches = batches.state_dict()
            window_tokens += tokens
            val: dict[str, float] = {}
            if validator is not None and (done == cfg.max_steps or (cfg.eval_every and done % cfg.eval_every == 0)):
                val = validator.evaluate(accelerator, student, teacher_model)
                if best is not None:
                    if best.update(done, val) and main:
                        save_best(run_dir / BEST, student, parts.tokenizer, best)
                    state.validation = best.state_dict()
                    patience = cfg.early_stopping_patience
                    stopped_early = patience is not None and best.since_best >= patience and done < cfg.max_steps
            if main and (done % cfg.log_every == 0 or done == cfg.max_steps or skipped or val or stopped_early):
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / max(elapsed, 1e-9)
                terms = {n: v for n, v in means.items() if n in pieces.terms}
                row = {"loss": loss, **terms, "lr": lr,
                       "grad_norm": grad_norm if math.isfinite(grad_norm) else None, "tokens_per_s": tps,
                       "tokens_seen": state.tokens_seen, "targets": global_targets,
                       **{n: v for n, v in means.items() if n not in terms}, **val}  # e.g. teacher_mass
                if scaler is not None:
                    row.update(loss_scale=scale, skipped=skipped)
                metrics.log(done, row)
                log_to_trackers(accelerator, done, row)
                progress.update(task, completed=done, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
                window_start, window_tokens = time.perf_counter(), 0
            if done % cfg.save_every == 0 or (done == cfg.max_steps and cfg.save_final) or stopped_early:
                _save_checkpoint(accelerator, ckpt_root, student, optimizer, scheduler, scaler, state, recipe_yaml,
                                 cfg.keep_checkpoints)
            if stopped_early:
                accelerator.print(f"early stopping at step {done}: {best.metric} has not improved for "
                                  f"{best.since_best} evaluations (best {best.best:.4f} at step {best.best_step}, in "
                                  f"{run_dir / BEST})")
                break

    # --- the final student, as a plain Hugging Face folder
    out = run_dir / STUDENT
    if main:
        with write_folder(out) as tmp:
            student.save_pretrained(tmp, safe_serialization=True)
            parts.tokenizer.save_pretrained(tmp)
        metrics.close()
        skipped_note = f" ({state.skipped_steps} steps skipped by the fp16 loss scaler)" if state.skipped_steps else ""
        best_note = (f"; the best by {best.metric} ({best.best:.4f}, step {best.best_step}) in {run_dir / BEST}"
                     if best is not None and best.best is not None else "")
        accelerator.print(f"student saved to {out}{skipped_note}; metrics in {run_dir / METRICS}, "
                          f"checkpoints in {ckpt_root}{best_note}")
    accelerator.wait_for_everyone()  # the trackers end after this (`ended_trackers` in `train`)
    return out


def _print_summary(accelerator: Accelerator, recipe: Recipe, parts: RunParts) -> None:
    """What is about to happen, before the first step: data (and what was dropped), models, processes."""
    cfg, data = recipe.training, parts.data
    epochs = cfg.max_steps * cfg.batch_size / len(data.examples)
    dropped = (f", {data.dropped:,} dropped (nothing left to learn at data.max_length {recipe.data.max_length})"
               if data.dropped else "")
    source = parts.teacher.description if parts.teacher is not None else "none (cross-entropy only)"
    accelerator.print(f"data: {len(data.examples):,} sequences ({data.format}), {data.n_targets:,} target tokens"
                      f"{dropped}; {cfg.max_steps} steps × {cfg.batch_size} = {epochs:.2f} epochs")
    accelerator.print(f"student: {count_parameters(parts.student):,} parameters; teacher: {source}; "
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
