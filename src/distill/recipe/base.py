"""What every recipe section shares: the `Section` base (unknown keys are errors), `FieldProblem` for cross-field
checks that blame one field, the `builtin:` prefix, how a glob is told from a path, and the walk from a field's
annotation to its section class."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from distill.builtin import BUILTIN_PREFIX

__all__ = ["BUILTIN_PREFIX", "FieldProblem", "Section", "is_glob"]

GLOB_CHARS = "*?["  # a data source holding one of these names files by pattern (data/file_formats.py expands it)


def is_glob(source: str) -> bool:
    return any(c in source for c in GLOB_CHARS)


class FieldProblem(ValueError):
    """A cross-field check that fails because of one particular field, relative to the section it is raised in;
    the message then names that field (`training.batch_size`), not just the section."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found:
            return found
    return None
