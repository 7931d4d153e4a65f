"""What `distill demo reasoning` runs: its options, sizes, and the recipes they produce (docs/reasoning.md).

The DeepSeek-R1 distillation recipe in miniature: the teacher samples step-by-step solutions to verifiable problems,
a verifier keeps the correct ones (rejection sampling), and a student is fine-tuned on them with plain cross-entropy
(sequence-level KD). The arms differ only in their training rows (and, for the optional KD arm, the objective):
same copied initialisation, same count of rows, same steps, order seed and optimizer.

Sizes: the defaults fit about 20 minutes on a shared 2-core CPU (docs/reasoning.md has the measured stage times);
`--minutes` scales the three costly stages — problems sampled, training steps, held-out problems — in proportion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from distill.demo.plan import apply_model_flags
from distill.errors import DataError
from distill.recipe import Recipe, validate_recipe
from distill.recipe.schema import GenerationRecipe

DEFAULT_TEACHER = "builtin:smollm2-135m-instruct"
SYSTEM = ("You are a helpful math assistant. Solve the problem step by step, then write the final answer on the last "
          "line in the form 'Answer: <number>'.")
TASK = "basic_arithmetic"
TASK_CONFIG: dict[str, Any] = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                               "operators": ["+", "-"], "allow_parentheses": False, "allow_negation": False}
# SmolLM2-135M without its layers 26 and 27 (28 of 30). Deeper cuts break it: 22 or 16 copied layers write gibberish
# (0% on held-out problems), which ~100 short traces and a few minutes of training cannot repair; two late layers
# fewer keep it fluent but cut its greedy pass@1 from ~35-43% to ~12-20% (measured on 32-48 problems), the regime in
# which the training data decide how much comes back.
DEFAULT_LAYERS = tuple(i for i in range(30) if i not in (26, 27))
DEFAULT_MINUTES = 20.0
# The verifier: the number after an answer mark (`Answer:`, `answer is`, `####`, \boxed, <answer>) when there is
# one, else the completion's last number, compared exactly with the reference (generation/verifiers.final_number).
# SmolLM2-135M writes "Answer:" in ~1% of samples but usually ends "... = 13." or "The answer is 13."
VERIFIER: dict[str, Any] = {"kind": "final_number", "answer_field": "answer"}


@dataclass
class ReasoningOptions:
    out: Path = Path("runs/reasoning")
    teacher: str = DEFAULT_TEACHER
    layers: tuple[int, ...] = DEFAULT_LAYERS
    task: str = TASK
    task_config: dict[str, Any] = field(default_factory=lambda: dict(TASK_CONFIG))
    system: str = SYSTEM
    # reasoning-gym seeds item i with seed + i: the two seeds are far apart so the problem sets cannot share seeds
    train_seed: int = 1_000
    eval_seed: int = 5_000_000
    prompts: int = 64  # training problems the teacher samples
    samples: int = 4  # samples per problem (rejection sampling's n)
    max_accepted: int = 2  # kept per problem (its m)
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 96
    verifier: dict[str, Any] = field(default_factory=lambda: dict(VERIFIER))
    steps: int = 16
    batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 2
    max_length: int = 192
    kd: bool = False  # add arm (d): verified rows + logit KD from the live teacher
    kd_alpha: float = 0.5
    eval_problems: int = 100
    eval_max_new_tokens: int = 96
    gen_batch_size: int = 64
    eval_batch_size: int = 64
    seed: int = 0
    threads: int | None = None  # torch threads; None = 1 when the machine is busy, else its CPUs

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["out"] = str(self.out)
        out["layers"] = list(self.layers)
        return out

    @property
    def arms(self) -> tuple[str, ...]:
        """The trained arms, in training order."""
        return ("unverified", "verified", "verified_kd") if self.kd else ("unverified", "verified")

    def check(self) -> None:
        """Refuse settings that would make the comparison meaningless, before any work."""
        if self.prompts < 2 or self.eval_problems < 2:
            raise DataError("demo reasoning: needs at least 2 training and 2 held-out problems")
        if self.max_accepted > self.samples:
            raise DataError(f"demo reasoning: max_accepted ({self.max_accepted}) exceeds samples per problem "
                            f"({self.samples})")
        low, high = sorted([(self.train_seed, self.prompts), (self.eval_seed, self.eval_problems)])
        if low[0] + low[1] > high[0]:
            raise DataError(f"demo reasoning: the training seeds {self.train_seed}..{self.train_seed + self.prompts} "
                            f"and held-out seeds {self.eval_seed}..{self.eval_seed + self.eval_problems} overlap "
                            "(reasoning-gym seeds item i with seed + i); move eval_seed")


def sized(options: ReasoningOptions, *, minutes: float | None = None, quick: bool = False,
          steps: int | None = None) -> ReasoningOptions:
    """The options at another size: `quick` a smoke run of a few minutes, `minutes` the default plan scaled."""
    if quick and minutes is not None:
        raise DataError("--quick and --minutes both size the run; give one of them")
    if quick:
        options = replace(options, prompts=16, samples=2, steps=2, eval_problems=8, max_new_tokens=64,
                          eval_max_new_tokens=64)
    elif minutes is not None:
        if minutes <= 0:
            raise DataError(f"--minutes must be positive, got {minutes}")
        scale = minutes / DEFAULT_MINUTES
        options = replace(options, prompts=max(4, round(options.prompts * scale)),
                          steps=max(2, round(options.steps * scale)),
                          eval_problems=max(10, round(options.eval_problems * scale)))
    if steps is not None:
        if steps < 1:
            raise DataError(f"--steps must be at least 1, got {steps}")
        options = replace(options, steps=steps)
    return options


def generation_recipe(options: ReasoningOptions) -> GenerationRecipe:
    """The `generate` recipe: the teacher writes `samples` solutions to each training problem; the verifier judges."""
    raw = {"teacher": {"model": options.teacher},
           "generate": {"task": {"name": options.task, "size": options.prompts, "seed": options.train_seed,
                                 "config": options.task_config},
                        "system": options.system, "chat": True, "n": options.samples,
                        "max_accepted": options.max_accepted,
                        "sampling": {"temperature": options.temperature, "top_p": options.top_p,
                                     "max_new_tokens": options.max_new_tokens, "seed": options.seed},
                        "verifier": options.verifier, "output": str(options.out / "generate"),
                        "batch_size": options.gen_batch_size}}
    return validate_recipe(raw, source="demo reasoning generate recipe", schema=GenerationRecipe)


def arm_recipe(options: ReasoningOptions, arm: str, data: Path, rows: int | None = None) -> Recipe:
    """The training recipe of one arm: sequence-level KD (cross-entropy on the teacher's completions, alpha 1), or
    for `verified_kd` the same plus logit KD from the live teacher on the same tokens (alpha < 1). With `rows`
    (the arms' common count of training rows) fewer than the batch size, the batch shrinks to it: a small run keeps
    few rows, and a batch may not hold a row twice."""
    alpha = options.kd_alpha if arm == "verified_kd" else 1.0
    batch = min(options.batch_size, rows) if rows else options.batch_size
    raw: dict[str, Any] = {
        "seed": options.seed,
        "teacher": {"model": options.teacher},
        "student": {"from_teacher": {"layers": list(options.layers)}},
        "data": {"train": str(data), "format": "messages", "max_length": options.max_length},
        "objective": {"kind": "seqkd", "alpha": alpha, "temperature": 1.0, "divergence": "forward_kl"},
        "training": {"output_dir": str(options.out / arm), "max_steps": options.steps,
                     "batch_size": batch, "micro_batch_size": batch, "lr": options.lr,
                     "warmup_steps": min(options.warmup_steps, max(options.steps - 1, 0)),
                     "save_every": max(options.steps // 2, 1), "log_every": 1},
    }
    return validate_recipe(raw, source=f"demo reasoning {arm} recipe")


def options_from_cli(*, out: Path | None, minutes: float | None, steps: int | None, teacher: str | None,
                     layers: str | None, lr: float | None, quick: bool, kd: bool, data: str | None,
                     heldout: str | None, alpha: float | None) -> ReasoningOptions:
    """The options `distill demo reasoning` was given; the text demo's own flags are refused, not ignored."""
    flags = (("--data", data), ("--heldout", heldout), ("--alpha", alpha))
    given = [flag for flag, value in flags if value is not None]
    if given:
        raise DataError(f"demo reasoning: {', '.join(given)} belong to the text demo; the reasoning demo's data are "
                        "reasoning-gym problems and its KD arm (--kd) has alpha 0.5")
    options = ReasoningOptions(out=out or ReasoningOptions.out, kd=kd)
    apply_model_flags(options, teacher=teacher, layers=layers, lr=lr)
    return sized(options, minutes=minutes, quick=quick, steps=steps)
