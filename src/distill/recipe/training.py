"""The `training` section: optimizer, schedule, batch sizes, precision and checkpoints."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from distill.recipe.base import FieldProblem, Section

# experiment trackers: accelerate's names (training/trackers.py maps each to the package it needs)
Tracker = Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio"]
TRACKERS: tuple[str, ...] = get_args(Tracker)


class TrainingConfig(Section):
    output_dir: str = Field(description="Run folder: checkpoints/, metrics.jsonl, recipe.yaml, tensorboard/, student/.")
    max_steps: int = Field(
        ge=1,
        description="Optimizer steps to run. Another value on `--resume` re-plans the learning rate from the resumed "
        "step: it keeps decaying smoothly, or, if the run had finished decaying, restarts warm.",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        description="Global batch: sequences per optimizer step, over all processes and accumulation steps.",
    )
    micro_batch_size: int = Field(
        default=8,
        ge=1,
        description="Sequences per forward pass per process. Accumulation steps = batch_size / (micro_batch_size × "
        "processes), so the same recipe gives the same training on 1 or N processes.",
    )
    lr: float = Field(default=3e-4, gt=0.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps, then cosine decay to `min_lr_ratio`.")
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="Final learning rate as a fraction of `lr`.")
    max_grad_norm: float | None = Field(default=1.0, gt=0.0, description="Clip the global gradient norm; null = off.")
    save_every: int = Field(default=100, ge=1, description="Write a resumable checkpoint every N steps.")
    save_final: bool = Field(
        default=True,
        description="Also write a resumable checkpoint at the last step. false: a run that needs only its student (a "
        "sweep, a benchmark) skips it, and cannot then be extended with --resume unless a save_every checkpoint "
        "exists.",
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Keep only the newest N checkpoints.")
    log_every: int = Field(default=1, ge=1, description="Write metrics every N steps.")
    trackers: list[Tracker] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Experiment trackers that get the metrics besides metrics.jsonl, through accelerate: tensorboard "
        "(into the run's tensorboard/), wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio. Each but "
        "tensorboard is installed only when you want it (`pip install wandb`) and configured as its library is "
        "(WANDB_MODE=offline, MLFLOW_TRACKING_URI, ...). A run that crashes still ends its tracker runs, as FAILED "
        "in MLflow and W&B. [] = metrics.jsonl only.",
    )
    eval_every: int | None = Field(
        default=None, ge=1, description="With validation data (`data.validation` or `data.validation_fraction`): "
        "evaluate the student every N steps and at the last (NLL, and agreement and KL with a live teacher), "
        "logged in metrics.jsonl as val_*. null = at the last step only.",
    )
    keep_best: Literal["val_nll", "val_agreement", "val_kl"] | None = Field(
        default=None, description="Keep the student of the best evaluation by this metric in the run's best/ (NLL "
        "and KL lower, agreement higher is better), with best.json saying its step and value.",
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="With `keep_best`: stop after this many evaluations in a row without a new "
        "best. The final student is then the last one; best/ holds the best.",
    )
    run_name: str | None = Field(
        default=None, description="The run's name in the trackers (filed under the project / experiment "
        "`distill`); null = the run folder's name.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="Mixed precision of the student's forward/backward (bf16 needs a GPU to be fast). fp16 needs a "
        "GPU (refused on a CPU) and a dynamic loss scaler: a step whose gradients overflow is skipped and logged.",
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward to save memory.")

    @model_validator(mode="after")
    def _patience_needs_a_metric(self) -> TrainingConfig:
        if self.early_stopping_patience is not None and self.keep_best is None:
            raise FieldProblem("early_stopping_patience", "needs training.keep_best, the metric whose best it "
                               "waits for")
        return self

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingConfig:
        if self.batch_size % self.micro_batch_size:
            raise FieldProblem(
                "batch_size",
                f"must be a multiple of micro_batch_size ({self.micro_batch_size}), got {self.batch_size}",
            )
        return self
