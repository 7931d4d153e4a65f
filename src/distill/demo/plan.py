"""What the demo runs: its options and the two training recipes they produce.

The two students differ in one field only — `objective.alpha` (0: learn from the teacher's distribution; 1: plain
cross-entropy on the data, the no-distillation baseline) — so their comparison isolates distillation: same copied
initialisation, same data order, same steps, same optimizer, same seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.recipe import Recipe, validate_recipe

DEFAULT_TEACHER = "builtin:smollm2-135m-instruct"
# Six of SmolLM2's 30 layers, spread evenly and keeping the first and last (DistilBERT-style initialisation).
DEFAULT_LAYERS = (0, 6, 12, 18, 24, 29)


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    teacher: str = DEFAULT_TEACHER
    layers: tuple[int, ...] = DEFAULT_LAYERS
    train_data: str = "builtin:shakespeare"
    heldout: str = "builtin:shakespeare/heldout"
    ood: str | None = "builtin:gsm-text/test"
    steps: int = 32
    batch_size: int = 8
    max_length: int = 256
    lr: float = 5e-4
    warmup_steps: int = 3
    divergence: str = "forward_kl"
    temperature: float = 1.0
    alpha: float = 0.0  # the KD student's CE weight; the baseline always has 1.0
    seed: int = 0
    eval_docs: int = 40
    ood_docs: int = 24
    tasks: tuple[str, ...] = ("basic_arithmetic", "chain_sum")  # gsm_symbolic: ~0 for 135M, and slow on a CPU
    task_n: int = 24
    save_every: int = 8

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["out"] = str(self.out)
        return out


def recipe_for(options: DemoOptions, which: str) -> Recipe:
    """The recipe of one demo student: `which` is "kd" or "baseline"."""
    if which not in ("kd", "baseline"):
        raise ValueError(which)
    raw: dict[str, Any] = {
        "seed": options.seed,
        "teacher": {"model": options.teacher},
        "student": {"from_teacher": {"layers": list(options.layers)}},
        "data": {"train": options.train_data, "format": "text", "max_length": options.max_length},
        "objective": {"divergence": options.divergence, "temperature": options.temperature,
                      "alpha": options.alpha if which == "kd" else 1.0},
        "training": {"output_dir": str(options.out / which), "max_steps": options.steps,
                     "batch_size": options.batch_size, "micro_batch_size": options.batch_size, "lr": options.lr,
                     "warmup_steps": min(options.warmup_steps, max(options.steps - 1, 0)),
                     "save_every": options.save_every, "log_every": 1},
    }
    return validate_recipe(raw, source=f"demo {which} recipe")


def apply_model_flags(options: Any, *, teacher: str | None, layers: str | None, lr: float | None) -> None:
    """`--teacher`, `--layers` and `--lr`, which both demos take, checked and set on their options."""
    from distill.errors import DataError

    if lr is not None:
        if lr <= 0:
            raise DataError(f"--lr must be positive, got {lr}")
        options.lr = lr
    if teacher:
        options.teacher = teacher
    if layers:
        try:
            options.layers = tuple(int(x) for x in layers.split(","))
        except ValueError:
            raise DataError(f"--layers: expected comma-separated layer indices like 0,6,12, got {layers!r}") from None
