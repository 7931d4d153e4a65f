"""What a task is: a versioned `TaskSpec` (where items come from, the prompt, how the answer is pulled out of the
generation), the built-in tasks, and loading a spec from a name or a task YAML, checked before any model is loaded.

A changed prompt gets a new version instead of silently moving the numbers. The Python escape hatch is a `python`
item source and a `verifier` callable, resolved here (`import_callable`) like reasoning-gym datasets
(`rg_dataset`), so a typo fails when the spec is loaded.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import json
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import DataError
from distill.recipe import BUILTIN_PREFIX

Extract = Literal["last_number", "after_answer", "first_line", "full"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasoningGymSource(_Spec):
    dataset: str = Field(description="reasoning-gym dataset name, e.g. `chain_sum` (see reasoning_gym.factory).")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the dataset's config (difficulty knobs); `seed` and `size` come from the "
        "evaluation (the seed is hashed, so neighbouring seeds do not give shifted copies of the same items).",
    )

    @field_validator("config")
    @classmethod
    def _no_seed_or_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if {"seed", "size"} & set(value):
            raise ValueError("`seed` and `size` are set by the evaluation (its seed and number of items); remove them")
        return value


class JsonlSource(_Spec):
    path: str = Field(description="A .jsonl (or .parquet) file of records; relative to the task YAML's folder.")
    question_field: str = Field(default="question", description="Field holding the question.")
    answer_field: str = Field(default="answer", description="Field holding the reference answer.")
    id_field: str = Field(default="id", description="Field holding a stable item id; the record index if absent.")


class PythonSource(_Spec):
    function: str = Field(
        description="`module:callable`, called as callable(n=N, seed=S, **kwargs); returns a list of dicts with "
        "`question` and `answer` (and optionally `id`, `entry`). It must be deterministic in (n, seed).",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the callable.")


class TaskSource(_Spec):
    reasoning_gym: ReasoningGymSource | None = Field(default=None, description="Procedurally generated items.")
    jsonl: JsonlSource | None = Field(default=None, description="Items from a local file.")
    python: PythonSource | None = Field(default=None, description="Items from your own Python function.")

    @model_validator(mode="after")
    def _exactly_one(self) -> TaskSource:
        given = [n for n in ("reasoning_gym", "jsonl", "python") if getattr(self, n) is not None]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError(f"set exactly one of `reasoning_gym`, `jsonl` or `python`{got}")
        return self


class TaskSpec(_Spec):
    name: str = Field(min_length=1, description="Short name used in reports.")
    version: int = Field(ge=1, description="Bump whenever the items, prompt, extraction or scoring change.")
    description: str = Field(description="What is measured and how the prompt asks for the answer.")
    source: TaskSource = Field(description="Where the items come from.")
    prompt: str = Field(
        default="{question}",
        description="Template with one `{question}` field (write `{{`/`}}` for literal braces); sent as a user "
        "message through the tokenizer's chat template when it has one, else as plain text.",
    )
    system: str | None = Field(default=None, description="System message (chat template only); null = template's.")
    chat_template: bool = Field(default=True, description="Use the tokenizer's chat template when it has one.")
    extract: Extract = Field(
        description="How the answer is pulled from the generation: `last_number` the last number in the output "
        "(commas in 1,000 dropped, 5.0 written 5); `after_answer` what follows the last `answer:` / `answer is` / "
        "`####` up to the end of that line, or the next line (empty, so wrong, without a marker); `first_line` the "
        "first non-empty line; `full` "
        "the whole output. All but `full` drop surrounding quotes, `*`, backticks and trailing punctuation.",
    )
    max_new_tokens: int = Field(ge=1, description="Generation budget per item; an unfinished answer is scored as is.")
    partial_credit: bool = Field(
        default=False,
        description="Average the verifier's raw scores instead of counting only full marks (1.0) as correct. "
        "reasoning-gym scorers give shaping rewards (0.01 for any number on gsm_symbolic): keep it off for accuracy.",
    )
    verifier: str | None = Field(
        default=None,
        description="`module:callable` scoring an answer as callable(extracted, item) -> float in [0, 1], replacing "
        "the source's own check (reasoning-gym's scorer, or normalised exact match).",
    )

    @field_validator("prompt")
    @classmethod
    def _one_question_field(cls, value: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write {{{{ and }}}} for literal braces") from None
        if fields != {"question"}:
            raise ValueError(f"must contain `{{question}}` and no other field, got {sorted(fields)}")
        return value


def _rg(dataset: str, config: dict[str, Any] | None = None) -> TaskSource:
    return TaskSource(reasoning_gym=ReasoningGymSource(dataset=dataset, config=config or {}))


_NUMBER_ONLY = "\nReply with only the final number, no explanation."
_SMALL = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}
# Budgets: a number-only answer takes a few tokens, so 48 and 32 leave room for a sentence around it. gsm_symbolic's
# own terse reference solutions (metadata.answer_cot, 500 items) run to ~170 tokens at the 99th percentile and ~240
# at most (a word or a punctuation mark a token, each digit one, as tokenizers that split digits count them); a
# model's own step by step answer is wordier, so 256 (v1) left it little room to reach its final number, which a
# cut-off answer loses. v2 allows 512; the report says how many answers still hit it.
BUILTIN_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(name="gsm_symbolic", version=2, source=_rg("gsm_symbolic"), extract="last_number", max_new_tokens=512,
                 prompt="{question}\nThink step by step, then end with the final number.",
                 description="GSM8K-style word problems (reasoning-gym gsm_symbolic); the prompt asks for step-by-step "
                 "reasoning ending in the number; the last number in the output is checked. Expect ~0 below ~1B "
                 "parameters."),
        TaskSpec(name="basic_arithmetic", version=1, source=_rg("basic_arithmetic", _SMALL), extract="last_number",
                 max_new_tokens=48, prompt="{question}" + _NUMBER_ONLY,
                 description="2-3 terms of 1-2 digits with + - * / and parentheses (reasoning-gym basic_arithmetic); "
                 "the prompt asks for only the final number; the last number in the output is checked."),
        TaskSpec(name="chain_sum", version=1, source=_rg("chain_sum", _SMALL), extract="last_number",
                 max_new_tokens=32, prompt="{question}" + _NUMBER_ONLY,
                 description="Sums and differences of 2-3 numbers of 1-2 digits (reasoning-gym chain_sum); the prompt "
                 "asks for only the final number; the last number in the output is checked."),
    ]
}


# ------------------------------------------------------------------------------------------------ loading specs


def load_task(spec: str | Path) -> TaskSpec:
    """A built-in task (`builtin:NAME` or `NAME`) or a task YAML file, validated and with its source checked, so a
    typo fails before any model is loaded."""
    text = str(spec)
    key = text.removeprefix(BUILTIN_PREFIX)
    if key in BUILTIN_TASKS:
        return BUILTIN_TASKS[key]
    path = Path(text)
    if not text.startswith(BUILTIN_PREFIX) and path.is_file():
        return _load_task_file(path)
    if not text.startswith(BUILTIN_PREFIX) and (path.suffix in (".yaml", ".yml") or "/" in text or "\\" in text):
        raise DataError(f"task file not found: {text} (relative paths are taken from the current directory)")
    close = difflib.get_close_matches(key, BUILTIN_TASKS, n=1)
    hint = f"did you mean `builtin:{close[0]}`? " if close else ""
    known = ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_TASKS)
    raise DataError(f"unknown eval task {text!r}; {hint}built-in tasks: {known}; or give the path of a task YAML file")


def _load_task_file(path: Path) -> TaskSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DataError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a task file is a mapping (name, version, source, ...), not a {type(raw).__name__}")
    try:
        task = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise DataError(f"{path}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    jsonl = task.source.jsonl
    if jsonl is not None and not Path(jsonl.path).is_absolute():
        resolved = jsonl.model_copy(update={"path": str((path.parent / jsonl.path).resolve())})
        task = task.model_copy(update={"source": task.source.model_copy(update={"jsonl": resolved})})
    check_task(task, where=str(path))
    return task


def check_task(spec: TaskSpec, where: str | None = None) -> None:
    """Fail early, with a DataError, when the spec's items or verifier cannot be produced."""
    where = where or f"task {spec.name!r}"
    src = spec.source
    if src.jsonl is not None and not Path(src.jsonl.path).is_file():
        raise DataError(f"{where}: source.jsonl.path: no such file: {src.jsonl.path}")
    if src.reasoning_gym is not None:
        rg_dataset(src.reasoning_gym.dataset, json.dumps(src.reasoning_gym.config, sort_keys=True), 0, 1, where)[0]
    if src.python is not None:
        import_callable(src.python.function, f"{where}: source.python.function")
    if spec.verifier is not None:
        import_callable(spec.verifier, f"{where}: verifier")


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc) or "task"
    if error["type"] == "extra_forbidden":
        model: type[BaseModel] | None = TaskSpec
        for part in loc[:-1]:
            info = model.model_fields.get(part) if model else None
            model = next((a for a in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(a, type)
                          and issubclass(a, BaseModel)), None) if info else None
        names = list(model.model_fields) if model else []
        close = difflib.get_close_matches(loc[-1], names, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else f" (valid keys: {', '.join(names)})"
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required, add it to the task file"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("value_error", "model_type", "dict_type"):
        message += f" (got {error.get('input')!r})"
    return f"{where}: {message}"


def import_callable(target: str, where: str) -> Any:
    """The `module:callable` a spec names (a python source, a verifier), or a DataError naming the field."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise DataError(f"{where}: {target!r} is not `module:callable`")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"{where}: cannot import {target!r} ({exc}); give a `module:callable` on sys.path") from None


@functools.lru_cache(maxsize=16)
def rg_dataset(name: str, config_json: str, seed: int, size: int, where: str) -> Any:
    """A reasoning-gym dataset (its items, and its scorer), or a DataError naming the unknown dataset or bad config."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        raise DataError(f"{where}: source.reasoning_gym.dataset: unknown dataset {name!r}"
                        + (f"; did you mean {close[0]!r}?" if close else "; see reasoning_gym.factory.DATASETS"))
    try:
        return reasoning_gym.create_dataset(name, seed=seed, size=size, **json.loads(config_json))
    except (TypeError, ValueError, AssertionError) as exc:
        problem = str(exc) or type(exc).__name__
        raise DataError(f"{where}: source.reasoning_gym.config: {problem} (see {name}'s config class)") from None
