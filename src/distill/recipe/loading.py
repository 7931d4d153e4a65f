"""From a YAML file to a validated `Recipe`: read, apply `--set a.b=c` overrides (values parsed as YAML), validate,
and turn every problem into one `RecipeError` line — unknown keys with a "did you mean", each problem naming its
field — then check that a local `data.train` exists. Relative paths are relative to the current working directory."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distill.errors import RecipeError
from distill.recipe.base import BUILTIN_PREFIX, FieldProblem, _section_type, is_glob
from distill.recipe.objective import OBJECTIVE_CONFIGS
from distill.recipe.portable import run_folder_of, with_absolute_paths
from distill.recipe.schema import TRAINING_SECTIONS, GenerationRecipe, Recipe

# sections that are a union told apart by `kind` (objective, from its second kind on): pydantic puts the member's tag
# in error locations (`objective.offpolicy.beta`), which the recipe does not spell
_TAGGED: dict[str, dict[str, type[BaseModel]]] = {"objective": OBJECTIVE_CONFIGS} if len(OBJECTIVE_CONFIGS) > 1 else {}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; every problem becomes one `RecipeError` line. A run's own
    `recipe.yaml` trains into the folder it sits in, wherever that folder was moved (`portable.py`)."""
    raw = _read_raw(Path(path))
    run_folder = run_folder_of(Path(path))
    if run_folder is not None and isinstance(raw.get("training"), dict):
        raw["training"]["output_dir"] = str(run_folder)
    for item in overrides:
        apply_override(raw, item)
    recipe = validate_recipe(raw, source=str(path))
    check_paths(recipe)
    return recipe


def _read_raw(path: Path) -> dict[str, Any]:
    """The YAML mapping of a recipe file; every problem is one RecipeError line."""
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
    return raw


def load_generation_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe | GenerationRecipe:
    """A recipe for `distill generate`: a whole `Recipe` when the file has training sections too (all of it is
    checked, so a mistake in the training part is found before hours of generation), else a `GenerationRecipe`.
    `data.train` need not exist yet: it is usually what this generation writes."""
    raw = _read_raw(Path(path))
    for item in overrides:
        apply_override(raw, item)
    schema: type[BaseModel] = Recipe if any(k in raw for k in TRAINING_SECTIONS) else GenerationRecipe
    recipe = validate_recipe(raw, source=str(path), schema=schema)
    if recipe.generate is None:
        raise RecipeError(f"{path}: generate: required by `distill generate`, add the section (docs/generate.md)")
    prompts = recipe.generate.prompts
    if prompts is not None and not prompts.startswith(BUILTIN_PREFIX) and not Path(prompts).exists():
        raise RecipeError(f"generate.prompts: no such file or folder: {prompts} (paths are relative to the current "
                          "directory)")
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


def validate_recipe(raw: dict[str, Any], source: str = "recipe", schema: type[BaseModel] = Recipe) -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error, schema) for error in exc.errors()]
        raise RecipeError(f"{source}: " + "; ".join(problems)) from None


def _describe(error: dict[str, Any], schema: type[BaseModel] = Recipe) -> str:
    loc = [str(p) for p in error["loc"]]
    member = _tagged_member(loc)
    if member is not None:
        del loc[1]
    field = ".".join(loc) or "recipe"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{field}: unknown key{_did_you_mean(loc, member, schema)}"
    if kind == "missing":
        return f"{field}: required, add it to the recipe"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        allowed = _one_of(list(_TAGGED.get(field, ())))
        tag = error.get("ctx", {}).get("tag")
        return f"{field}.kind: must be one of {allowed}{_did_you_mean_value(tag, allowed) if tag else ''}"
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


def _tagged_member(loc: list[str]) -> type[BaseModel] | None:
    """The member of a tagged-union section that an error location runs through (`objective.offpolicy.…`)."""
    members = _TAGGED.get(loc[0]) if len(loc) > 1 else None
    return members.get(loc[1]) if members else None


def _did_you_mean(loc: list[str], member: type[BaseModel] | None = None, schema: type[BaseModel] = Recipe) -> str:
    """Suggest the nearest valid key for an unknown one, looked up in the schema at that location (`member`: the
    class of a tagged-union section, which the schema alone cannot tell)."""
    model: type[BaseModel] | None = schema
    for i, part in enumerate(loc[:-1]):
        field = model.model_fields.get(part) if model else None
        model = member if i == 0 and member is not None else _section_type(field.annotation) if field else None
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


def _one_of(options: list[str]) -> str:
    """`'a', 'b' or 'c'`, as pydantic lists a Literal's values."""
    quoted = [repr(o) for o in options]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else "".join(quoted)


def _did_you_mean_value(value: Any, allowed: str) -> str:
    options = [o.strip().strip("'") for o in allowed.replace(" or ", ", ").split(",")]
    close = difflib.get_close_matches(str(value), options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_paths(recipe: Recipe) -> None:
    """Local paths that a recipe names must exist; hub ids and builtins are checked when loaded, globs when read."""
    for i, source in enumerate(recipe.data.sources()):
        data = source.path
        field = "data.train" if recipe.data.mixture is None else f"data.mixture[{i}].path"
        if not data.startswith(BUILTIN_PREFIX) and not is_glob(data) and not Path(data).exists():
            raise RecipeError(f"{field}: no such file or folder: {data} (paths are relative to the current "
                              "directory)")


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe (defaults filled in, local paths absolute: `portable.py`), as written next to a
    run."""
    return yaml.safe_dump(with_absolute_paths(recipe.model_dump(mode="json")), sort_keys=False)
