"""The recipe: one validated YAML file that describes a whole distillation run.

Every field has its one default and one description here, next to each other; `docs/recipe.md` is generated from
this schema (`python -m distill.recipe_docs`) and a test keeps the two in sync. Unknown keys are rejected with a
"did you mean", all problems are reported together on one line, and `--set a.b=c` overrides any field.

Relative paths are taken relative to the current working directory, like every other command-line tool.
"""

from __future__ import annotations

import codecs
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import RecipeError

BUILTIN_PREFIX = "builtin:"


class FieldProblem(ValueError):
    """A cross-field check that fails because of one particular field, relative to the section it is raised in;
    the message then names that field (`training.batch_size`), not just the section."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TeacherConfig(Section):
    model: str | None = Field(
        default=None,
        description="Hugging Face model id, local folder, or `builtin:NAME` (see `distill models`): the live teacher, "
        "and what `distill cache` runs.",
    )
    cache: str | None = Field(
        default=None,
        description="A teacher cache folder written by `distill cache`: training reads the teacher's top-k signal "
        "from it and loads no teacher model (unless `student.from_teacher` needs its layers).",
    )
    top_k: int = Field(
        default=64, ge=1, description="Tokens per position a cache stores (and, with `cache`, must have stored)."
    )
    capture_temperature: float | None = Field(
        default=None,
        gt=0.0,
        description="Temperature of the log-probs a cache stores (with `cache`: must be the cache's); null = "
        "objective.temperature. `topk_mode: tail` needs the two equal (the tail's mass is known only at the capture "
        "temperature); `renormalize` re-tempers the top-k exactly.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) of `model`.")
    trust_remote_code: bool = Field(
        default=False, description="Allow the model's own Python code to run. Off unless you trust the source."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Precision the frozen teacher is loaded in."
    )

    @model_validator(mode="after")
    def _model_or_cache(self) -> TeacherConfig:
        if self.model is None and self.cache is None:
            raise ValueError("set `model` (a live teacher), `cache` (a folder from `distill cache`), or both")
        return self


class FromTeacher(Section):
    layers: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1,
        description="Indices of the teacher's decoder layers to copy, in order (DistilBERT / distil-whisper style). "
        "Embeddings, final norm and LM head are copied too.",
    )


class StudentConfig(Section):
    model: str | None = Field(
        default=None, description="(a) An existing model: Hugging Face id, local folder, or `builtin:NAME`."
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="(b) A fresh, randomly initialised architecture: a transformers config as a mapping "
        "(`model_type` required; `vocab_size` defaults to the tokenizer's).",
    )
    from_teacher: FromTeacher | None = Field(
        default=None, description="(c) Initialise from the teacher by copying chosen layers."
    )
    revision: str | None = Field(default=None, description="Hub revision of `model`.")
    trust_remote_code: bool = Field(default=False, description="Allow the student's own Python code to run.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> StudentConfig:
        given = [name for name in ("model", "config", "from_teacher") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of `model`, `config` or `from_teacher`"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.config is not None and "model_type" not in self.config:
            raise FieldProblem("config.model_type", "required, e.g. `model_type: llama`")
        return self


DataFormat = Literal["auto", "text", "prompt_completion", "messages"]


class DataConfig(Section):
    train: str = Field(
        description="Training data: a .jsonl or .parquet file, a folder of .txt files, a `datasets` folder "
        "(save_to_disk), or `builtin:NAME`.",
    )
    format: DataFormat = Field(
        default="auto",
        description="`text` (language modelling), `prompt_completion` (loss on the completion only), or `messages` "
        "(chat, rendered with the tokenizer's chat template; loss on assistant turns only). `auto` picks from the "
        "fields of the first record.",
    )
    text_field: str = Field(default="text", description="Field holding the text for `format: text`.")
    max_length: int = Field(default=512, ge=8, description="Tokens per sequence (packed block length for text).")
    packing: bool = Field(
        default=True,
        description="For `text`: concatenate documents (separated by EOS) and cut into blocks of `max_length`.",
    )
    max_examples: int | None = Field(default=None, ge=1, description="Use only the first N records (for quick runs).")
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of .jsonl files and .txt folders (any Python codec: `latin-1`, `cp1252`, "
        "`utf-16`, ...). Decoding is strict: a file that does not decode is an error naming its line, never "
        "replacement characters.",
    )

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; use a Python codec name such as utf-8, latin-1 or "
                             "cp1252") from None
        try:
            "\n".encode(value)  # not b"".decode: the empty input skips the check
        except LookupError:  # a bytes-to-bytes codec (base64, zlib, hex)
            raise ValueError(f"{value!r} is not a text encoding; use one such as utf-8, latin-1 or cp1252") from None
        return value


Divergence = Literal["forward_kl", "reverse_kl", "jsd", "interpolated_kl", "tvd", "skew_kl", "skew_reverse_kl", "akl"]


class ObjectiveConfig(Section):
    kind: Literal["offpolicy"] = Field(
        default="offpolicy",
        description="How a batch is formed. `offpolicy`: dataset tokens, teacher signal at every position.",
    )
    divergence: Divergence = Field(
        default="forward_kl",
        description="Divergence between teacher P and student Q: `forward_kl` KL(P‖Q), `reverse_kl` KL(Q‖P), `jsd` "
        "(generalized, GKD/TRL), `interpolated_kl`, `tvd`, `skew_kl`, `skew_reverse_kl` (DistiLLM), `akl` (adaptive "
        "KL). Formulas: docs/losses.md.",
    )
    beta: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="`jsd`: mixture weight β (0 = forward KL, 1 = reverse KL); `interpolated_kl`: weight of "
        "reverse KL.",
    )
    jsd_normalized: bool = Field(
        default=False,
        description="`jsd`: divide by β(1 − β), so the value moves continuously from forward KL to reverse KL "
        "instead of shrinking toward 0 near β = 0 and 1.",
    )
    skew_alpha: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="`skew_kl` / `skew_reverse_kl`: the skew α of DistiLLM."
    )
    akl_mu: float = Field(
        default=0.5, gt=0.0, le=1.0, description="`akl`: teacher mass that defines the head (AKL's μ)."
    )
    alpha: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Weight of cross-entropy on the labels; the distillation term gets 1 − alpha. "
        "alpha = 1 is the no-distillation baseline (no teacher needed).",
    )
    temperature: float = Field(
        default=1.0,
        gt=0.0,
        description="Loss temperature T: both distributions are softened by T, the term scaled by T².",
    )
    implementation: Literal["chunked", "reference"] = Field(
        default="chunked",
        description="`chunked`: the fused path from hidden states, never holding full logits (default). "
        "`reference`: full logits, plain autograd — the slow twin, for checking.",
    )
    topk_mode: Literal["tail", "renormalize"] = Field(
        default="tail",
        description="With a top-k teacher (a cache): `tail` compares k + 1 outcomes, the k tokens and the mass outside "
        "them (exact when k is the vocabulary); `renormalize` treats the k tokens as the whole distribution.",
    )
    chunk_size: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per chunk of the chunked path; null = about 16M logits per chunk (341 tokens at a 49k "
        "vocabulary).",
    )


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
    keep_checkpoints: int = Field(default=2, ge=1, description="Keep only the newest N checkpoints.")
    log_every: int = Field(default=1, ge=1, description="Write metrics every N steps.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="Mixed precision of the student's forward/backward (bf16 needs a GPU to be fast). fp16 needs a "
        "GPU (refused on a CPU) and a dynamic loss scaler: a step whose gradients overflow is skipped and logged.",
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward to save memory.")

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingConfig:
        if self.batch_size % self.micro_batch_size:
            raise FieldProblem(
                "batch_size",
                f"must be a multiple of micro_batch_size ({self.micro_batch_size}), got {self.batch_size}",
            )
        return self


class Recipe(Section):
    seed: int = Field(
        default=0, description="Seeds model init, data order and dropout; same recipe + seed → same weights."
    )
    teacher: TeacherConfig | None = Field(
        default=None, description="The frozen teacher. May be omitted only when objective.alpha is 1 (no distillation)."
    )
    student: StudentConfig = Field(description="The model being trained.")
    tokenizer: str | None = Field(
        default=None,
        description="Where the shared tokenizer comes from (id, folder or `builtin:NAME`). Default: the teacher's, "
        "else the student model's.",
    )
    data: DataConfig = Field(description="Where training sequences come from and how they are tokenized.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="What the student learns from.")
    training: TrainingConfig = Field(description="Optimizer, schedule, batch sizes, checkpoints.")

    @model_validator(mode="after")
    def _teacher_when_needed(self) -> Recipe:
        if self.teacher is None and self.objective.alpha < 1.0:
            raise FieldProblem("teacher", "required unless objective.alpha is 1 (plain cross-entropy)")
        if self.student.from_teacher is not None and (self.teacher is None or self.teacher.model is None):
            raise FieldProblem("teacher.model", "required by student.from_teacher (the layers are copied from it)")
        if self.tokenizer_source is None:
            raise FieldProblem("tokenizer", "required when the student is built from `config` and there is no "
                               "teacher.model")
        return self

    def tokenizer_options(self) -> tuple[str, str | None, bool]:
        """(source, revision, trust_remote_code) of the shared tokenizer: the model it comes from decides the
        revision and whether its code may run."""
        source = self.tokenizer_source or ""
        if self.tokenizer is None and self.teacher is not None and self.teacher.model is not None:
            return source, self.teacher.revision, self.teacher.trust_remote_code
        if self.tokenizer is None:
            return source, self.student.revision, self.student.trust_remote_code
        return source, None, False

    @property
    def capture_temperature(self) -> float:
        """The temperature a teacher cache for this recipe stores: teacher.capture_temperature, else the loss's."""
        t = self.teacher.capture_temperature if self.teacher is not None else None
        return t if t is not None else self.objective.temperature

    @property
    def tokenizer_source(self) -> str | None:
        if self.tokenizer:
            return self.tokenizer
        if self.teacher is not None and self.teacher.model is not None:
            return self.teacher.model
        return self.student.model


# ---------------------------------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; every problem becomes one `RecipeError` line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); a recipe is a YAML "
                          "text file: check the path, or save the file as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: invalid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(
            f"{path}: a recipe is a mapping of sections (teacher, student, data, ...), not a {type(raw).__name__}"
        )
    for item in overrides:
        apply_override(raw, item)
    recipe = validate_recipe(raw, source=str(path))
    check_paths(recipe)
    return recipe


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (so 3e-4, true, [0, 5] work)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.lr=1e-4")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML") from None


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise RecipeError(f"{source}: " + "; ".join(problems)) from None


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    field = ".".join(loc) or "recipe"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{field}: unknown key{_did_you_mean(loc)}"
    if kind == "missing":
        return f"{field}: required, add it to the recipe"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    problem = error.get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):
        return f"{'.'.join([*loc, problem.field])}: {problem}"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        msg = f"must be one of {allowed}{_did_you_mean_value(error.get('input'), allowed)}"
    elif "input" in error and kind not in ("value_error", "model_type", "dict_type"):
        msg = f"{msg} (got {error['input']!r})"
    return f"{field}: {msg}"


def _did_you_mean(loc: list[str]) -> str:
    """Suggest the nearest valid key for an unknown one, looked up in the schema at that location."""
    model: type[BaseModel] | None = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part) if model else None
        model = _section_type(field.annotation) if field else None
    if model is None:
        return ""
    names = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], names, n=1) or [n for n in names if _abbreviates(loc[-1], n)][:1]
    valid = ", ".join(names)
    return f" (did you mean `{close[0]}`?)" if close else f" (valid keys: {valid})"


def _abbreviates(key: str, name: str) -> bool:
    """`learning_rate` for `lr` (or `bs` for `batch_size`): one is the initials of the other's words."""

    def initials(text: str) -> str:
        return "".join(word[0] for word in text.split("_") if word)

    return ("_" in key and initials(key) == name) or ("_" in name and initials(name) == key)


def _did_you_mean_value(value: Any, allowed: str) -> str:
    options = [o.strip().strip("'") for o in allowed.replace(" or ", ", ").split(",")]
    close = difflib.get_close_matches(str(value), options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found:
            return found
    return None


def check_paths(recipe: Recipe) -> None:
    """Local paths that a recipe names must exist; hub ids and builtins are checked when loaded."""
    data = recipe.data.train
    if not data.startswith(BUILTIN_PREFIX) and not Path(data).exists():
        raise RecipeError(f"data.train: no such file or folder: {data} (paths are relative to the current directory)")


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe (defaults filled in), as written next to a run."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
