"""The recipe reference is generated from the schema and stays in sync; every shipped recipe validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from distill.recipe import Recipe, _section_type, load_recipe
from distill.recipe.loading import load_generation_recipe
from distill.recipe_docs import generate

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "examples" / "recipes").glob("*.yaml"))


def schema_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
    """(dotted path, description) of every field of the schema, nested sections included."""
    found = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        found.append((path, field.description))
        sub = _section_type(field.annotation)
        if sub is not None:
            found += schema_fields(sub, path + ".")
    return found


def test_recipe_reference_is_up_to_date() -> None:
    committed = (REPO / "docs" / "recipe.md").read_text(encoding="utf-8")
    assert committed == generate(), (
        "docs/recipe.md is out of date with src/distill/recipe.py; run `python -m distill.recipe_docs --write` "
        "from the repository root"
    )


def test_every_field_is_described_and_documented() -> None:
    text = generate()
    fields = schema_fields(Recipe)
    assert len(fields) > 30  # the walk reached the nested sections
    assert [path for path, description in fields if not description] == [], "every field needs a description"
    assert [path for path, _ in fields if f"| `{path}` |" not in text] == []


def test_shipped_recipes_exist() -> None:
    assert RECIPES, "examples/recipes/ holds no recipes"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_validates(recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # relative paths in a recipe are relative to the working directory: the repo root
    if "generate" in yaml.safe_load(recipe.read_text()):  # read by `distill generate` (training sections optional)
        assert load_generation_recipe(recipe).generate is not None
        return
    loaded = load_recipe(recipe)
    assert loaded.training.max_steps >= 1
