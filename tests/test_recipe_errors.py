"""Malformed recipes, run through the real CLI: each exits 2 with one `error:` line that names the offending field.

Almost all of them fail at validation, before any model is loaded; the two that need the tiny teacher's tokenizer or
config (layers out of range, records without usable fields) say so with `needs_teacher`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import base_recipe, run_cli, write_recipe

# ---------------------------------------------------------------------------------------------------- helpers


def assert_one_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 2, exactly one non-empty `error:` line on stderr containing every `expected`, no traceback."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1, shown
    line = lines[0]
    assert line.startswith("error: ") and line[len("error: "):].strip(), shown
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


@dataclass
class Case:
    verb: str  # "train" or "check"
    build: Callable[[Path, Path], Path]  # (tmp_path, data file) -> recipe path
    expected: tuple[str, ...]  # substrings of the error line: the field path first
    args: tuple[str, ...] = ()
    needs_teacher: bool = False


def recipe_with(edit: Callable[[dict[str, Any], Path], None]) -> Callable[[Path, Path], Path]:
    """A builder: the valid `base_recipe`, changed in place by `edit(recipe, tmp_path)`, written to a file."""

    def build(tmp_path: Path, data: Path) -> Path:
        recipe = base_recipe(data, tmp_path / "run")
        edit(recipe, tmp_path)
        return write_recipe(tmp_path / "recipe.yaml", recipe)

    return build


def setting(section: str, **values: Any) -> Callable[[Path, Path], Path]:
    """A builder that updates one section of the base recipe."""
    return recipe_with(lambda recipe, _tmp: recipe[section].update(values))


def text_file(text: str) -> Callable[[Path, Path], Path]:
    """A builder that writes `text` verbatim as the recipe file."""
    return bytes_file(text.encode("utf-8"))


def bytes_file(content: bytes) -> Callable[[Path, Path], Path]:
    """A builder that writes `content` verbatim as the recipe file (not necessarily text)."""

    def build(tmp_path: Path, data: Path) -> Path:
        path = tmp_path / "recipe.yaml"
        path.write_bytes(content)
        return path

    return build


def valid(tmp_path: Path, data: Path) -> Path:
    return write_recipe(tmp_path / "recipe.yaml", base_recipe(data, tmp_path / "run"))


def _rename_training(recipe: dict[str, Any], _tmp: Path) -> None:
    recipe["trainig"] = recipe.pop("training")


def _drop(section: str) -> Callable[[dict[str, Any], Path], None]:
    return lambda recipe, _tmp: recipe.pop(section)


def _data_file(lines: list[str]) -> Callable[[dict[str, Any], Path], None]:
    def edit(recipe: dict[str, Any], tmp: Path) -> None:
        path = tmp / "records.jsonl"
        path.write_text("".join(line + "\n" for line in lines))
        recipe["data"]["train"] = str(path)

    return edit


def _unusable_records(fmt: str) -> Callable[[dict[str, Any], Path], None]:
    write = _data_file([json.dumps({"title": f"story {i}", "score": i}) for i in range(5)])

    def edit(recipe: dict[str, Any], tmp: Path) -> None:
        write(recipe, tmp)
        recipe["data"]["format"] = fmt

    return edit


INVALID_YAML = "seed: 0\ntraining:\n  lr: [1.0e-3\n  max_steps: 3\n"

CASES = {
    "unknown-top-level-key": Case(
        "check", recipe_with(_rename_training), ("trainig: unknown key", "did you mean `training`?")),
    "unknown-nested-key": Case(
        "train", setting("training", learning_rate=1e-3),
        ("training.learning_rate: unknown key", "did you mean `lr`?")),
    "unknown-deep-key": Case(
        "check", recipe_with(lambda r, _t: r["student"]["from_teacher"].update(layer=[0])),
        ("student.from_teacher.layer: unknown key", "did you mean `layers`?")),
    "wrong-type": Case("train", setting("training", lr="fast"), ("training.lr", "'fast'")),
    "wrong-type-list": Case(
        "check", recipe_with(lambda r, _t: r["student"]["from_teacher"].update(layers="first")),
        ("student.from_teacher.layers", "'first'")),
    "missing-section": Case("check", recipe_with(_drop("training")), ("training: required",)),
    "missing-required-field": Case(
        "train", recipe_with(lambda r, _t: r["training"].pop("max_steps")), ("training.max_steps: required",)),
    "missing-data-file": Case(
        "train", setting("data", train="no/such/train.jsonl"), ("data.train", "no/such/train.jsonl")),
    "negative-lr": Case("train", setting("training", lr=-1e-3), ("training.lr", "greater than 0")),
    "alpha-above-one": Case("check", setting("objective", alpha=1.5), ("objective.alpha", "1.5")),
    "zero-temperature": Case("train", setting("objective", temperature=0), ("objective.temperature", "greater than 0")),
    "max-length-too-small": Case("check", setting("data", max_length=4), ("data.max_length", "(got 4)")),
    "batch-not-multiple-of-micro": Case(
        "check", setting("training", batch_size=6, micro_batch_size=4),
        ("training.batch_size:", "micro_batch_size (4)", "got 6")),
    "student-model-and-from-teacher": Case(
        "train", setting("student", model="builtin:tiny-teacher"),
        ("student:", "`model`", "(got model, from_teacher)")),
    "student-no-source": Case(
        "check", recipe_with(lambda r, _t: r.update(student={})), ("student:", "set exactly one of")),
    "unknown-divergence": Case(
        "check", setting("objective", divergence="forward_kll"),
        ("objective.divergence", "did you mean 'forward_kl'?")),
    "unknown-precision": Case("train", setting("training", precision="fp8"), ("training.precision", "'bf16'")),
    "missing-teacher-with-alpha-below-one": Case(
        "check", recipe_with(_drop("teacher")), ("teacher: required", "objective.alpha")),
    "from-teacher-without-teacher": Case(
        "train", recipe_with(lambda r, _t: (r.pop("teacher"), r["objective"].update(alpha=1.0))),
        ("teacher.model: required by student.from_teacher",)),
    "teacher-without-model-or-cache": Case(
        "check", recipe_with(lambda r, _t: r["teacher"].pop("model")), ("teacher: set `model`", "`cache`")),
    "several-problems-one-line": Case(
        "check", recipe_with(lambda r, _t: (r["training"].update(lr=-1), r["objective"].update(alpha=1.5))),
        ("training.lr", "objective.alpha")),
    "invalid-yaml": Case("train", text_file(INVALID_YAML), ("recipe.yaml", "invalid YAML at line 4")),
    "recipe-not-a-mapping": Case("check", text_file("- teacher\n- student\n"), ("recipe.yaml", "not a list")),
    "recipe-not-text": Case(
        "check", bytes_file(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00"),
        ("recipe.yaml", "not UTF-8 text", "line 1")),
    "recipe-latin1": Case(
        "train", bytes_file("seed: 0\n# réglages\n".encode("latin-1")), ("recipe.yaml", "not UTF-8 text", "line 2")),
    "unknown-encoding": Case(
        "check", setting("data", encoding="utf-9"), ("data.encoding: unknown text encoding 'utf-9'",)),
    "binary-encoding": Case(
        "check", setting("data", encoding="base64"), ("data.encoding", "'base64' is not a text encoding")),
    "recipe-file-missing": Case(
        "check", lambda tmp, _data: tmp / "missing.yaml", ("recipe file not found", "missing.yaml")),
    "set-without-equals": Case(
        "train", valid, ("--set 'training.lr'", "expected KEY=VALUE"), args=("--set", "training.lr")),
    "set-unknown-key": Case(
        "check", valid, ("objective.temprature: unknown key", "did you mean `temperature`?"),
        args=("--set", "objective.temprature=2")),
    "set-unknown-section": Case(
        "train", valid, ("trainng: unknown key", "did you mean `training`?"), args=("--set", "trainng.lr=1e-4")),
    "set-into-a-value": Case(
        "check", valid, ("training.lr is a value, not a section",), args=("--set", "training.lr.peak=1")),
    "set-bad-value": Case("check", valid, ("training.lr", "(got -5)"), args=("--set", "training.lr=-5")),
    "layers-out-of-range": Case(
        "train", recipe_with(lambda r, _t: r["student"]["from_teacher"].update(layers=[0, 7])),
        ("student.from_teacher.layers", "[7] out of range", "4 layers"), needs_teacher=True),
    "records-without-usable-fields": Case(
        "train", recipe_with(_unusable_records("auto")), ("data.format", "'score', 'title'"), needs_teacher=True),
    "records-without-text-field": Case(
        "check", recipe_with(_unusable_records("text")), ("data.text_field", "'text'"), needs_teacher=True),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_malformed_recipe_is_one_error_line(case: Case, tmp_path: Path, text_data: Path,
                                            request: pytest.FixtureRequest) -> None:
    if case.needs_teacher:
        request.getfixturevalue("tiny_teacher_dir")  # build it here once, not inside a subprocess
    path = case.build(tmp_path, text_data)
    result = run_cli(case.verb, str(path), *case.args)
    assert_one_error(result, *case.expected)
    if case.verb == "train":
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_debug_shows_the_traceback(tmp_path: Path, text_data: Path) -> None:
    path = setting("training", lr=-1e-3)(tmp_path, text_data)
    result = run_cli("check", str(path), "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "RecipeError" in result.stderr


# ---------------------------------------------------------------------------------------------------- in process


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path: Path, text_data: Path) -> None:
    from distill.recipe import load_recipe

    path = valid(tmp_path, text_data)
    recipe = load_recipe(path, overrides=["training.lr=1e-4", "student.from_teacher.layers=[0, 2]"])
    assert isinstance(recipe.training.lr, float) and recipe.training.lr == pytest.approx(1e-4)
    assert recipe.student.from_teacher is not None
    assert recipe.student.from_teacher.layers == [0, 2]
    assert all(type(i) is int for i in recipe.student.from_teacher.layers)
    assert recipe.training.max_steps == 4  # untouched fields keep the recipe's values

    recipe = load_recipe(path, overrides=["training.gradient_checkpointing=true", "data.max_examples=10",
                                          "training.max_grad_norm=null", "training.lr=2e-3", "training.lr=5.0e-3"])
    assert recipe.training.gradient_checkpointing is True
    assert recipe.data.max_examples == 10
    assert recipe.training.max_grad_norm is None
    assert recipe.training.lr == pytest.approx(5e-3)  # the last override of a key wins


def test_override_creates_a_missing_section(tmp_path: Path, text_data: Path) -> None:
    from distill.recipe import load_recipe

    recipe = base_recipe(text_data, tmp_path / "run")
    del recipe["objective"]
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    loaded = load_recipe(path, overrides=["objective.temperature=4"])
    assert loaded.objective.temperature == 4.0
    assert loaded.objective.alpha == 0.5  # the rest of the section keeps its defaults


def test_recipe_error_lists_every_problem(tmp_path: Path, text_data: Path) -> None:
    from distill.errors import RecipeError
    from distill.recipe import load_recipe

    recipe = base_recipe(text_data, tmp_path / "run")
    recipe["training"].update(lr=0, learning_rate=1e-3)
    recipe["objective"]["temperature"] = -1
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    for field in ("training.lr", "training.learning_rate", "objective.temperature"):
        assert field in message
