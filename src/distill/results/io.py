"""Reading and writing result files: one reader (`load_result`) and one writer (`write_result`) for `eval.json` and
`summary.json`, and the one-line messages a malformed file gets.

A file of another schema version is refused before anything else is read from it; a field with the wrong shape is a
`DataError` naming the file and the field's path (`sets.heldout.metrics.kd.nll should be an interval …`), never a
traceback from deep inside the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distill.atomic import write_json
from distill.errors import DataError
from distill.results.layout import RESULT_FILES
from distill.results.schema import DEMO_KIND, SCHEMA_VERSION, DemoSummary, EvalResult

REGENERATE = "regenerate it with `distill eval`"

# what a value should have been, by pydantic error type; a model names its own shape (`_SHAPES`, else "an object")
_EXPECTED = {"dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
             "list_type": "a list", "string_type": "a string", "int_type": "a whole number",
             "int_parsing": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
             "float_parsing": "a number", "finite_number": "a finite number", "bool_type": "true or false",
             "bool_parsing": "true or false"}
_SHAPES = {"Interval": 'an interval {"mean", "ci_low", "ci_high"}'}


def result_file(folder: Path) -> Path:
    """The result file to read: `folder` itself when it is a file, else its summary.json (a demo run, with the
    training facts), else its eval.json (`distill eval --out DIR/eval.json`, which has none)."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    found = next((folder / name for name in RESULT_FILES if (folder / name).is_file()), None)
    if found is None:
        raise DataError(f"{folder}: no {' or '.join(RESULT_FILES)} there; run `distill demo` or "
                        "`distill eval --out DIR/eval.json` first, or pass the folder or the result file itself")
    return found


def read_json_object(path: Path, regenerate: str) -> dict[str, Any]:
    """A result file's JSON object; unreadable, not JSON or not an object is a one-line DataError that ends with
    how to `regenerate` it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); {regenerate}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} should hold a JSON object, not {type(data).__name__}; {regenerate}")
    return data


def names_result(path: Path, name: str, kind: str) -> bool:
    """Whether `path` is a result file of this kind: by its file name, or by the `kind` field of a JSON file."""
    path = Path(path)
    if path.name == name:
        return True
    try:
        return path.suffix == ".json" and json.loads(path.read_text(encoding="utf-8")).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def load_result(path: Path) -> EvalResult:
    """Read and validate an eval.json (an `EvalResult`) or a demo's summary.json (a `DemoSummary`, kind
    distill.demo); every problem is a one-line DataError."""
    path = Path(path)
    data = read_json_object(path, REGENERATE)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {data.get('schema_version')!r} but this distill reads version "
                        f"{SCHEMA_VERSION}; regenerate it with this version's `distill eval`")
    if not isinstance(data.get("models"), dict) or not data["models"]:
        raise DataError(f"{path} lists no models; {REGENERATE}")
    model = DemoSummary if data.get("kind") == DEMO_KIND else EvalResult
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{path}: {first_problem(exc)}; {REGENERATE}") from exc


def write_result(path: Path, result: EvalResult) -> None:
    """Write a result atomically, as the fields it holds (`to_json`)."""
    write_json(Path(path), result.to_json())


def first_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, in words, and how many more there are."""
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return describe(errors[0]) + more


def describe(error: Any) -> str:
    """One pydantic error as `<field path> should be …`."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        text = "is missing"
    elif kind == "value_error":  # our validators say "should …" themselves
        text = str(ctx.get("error") or error["msg"])
    elif kind == "literal_error":
        text = f"should be {ctx.get('expected')}"
    elif kind == "too_short":
        text = "should not be empty"
    elif kind in _EXPECTED:
        text = f"should be {_SHAPES.get(ctx.get('class_name', ''), _EXPECTED[kind])}"
    else:
        text = f"is not valid: {error['msg']}"
    where = field_path(error["loc"])
    return f"{where} {text}" if where else text


def field_path(loc: Sequence[int | str]) -> str:
    """("sets", "s", "bins", 2) → "sets.s.bins[2]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
