"""The recipe: one validated YAML file that describes a whole distillation run.

Every field has its one default and one description, next to each other, in the section modules here (`teacher`,
`student`, `data`, `objective`, `training`; the whole `Recipe` and its cross-field rules in `schema`);
`docs/recipe.md` is generated from this schema (`python -m distill.recipe_docs`) and a test keeps the two in sync.
`loading` reads a recipe: unknown keys are rejected with a "did you mean", all problems are reported together on one
line, and `--set a.b=c` overrides any field.

Relative paths are taken relative to the current working directory, like every other command-line tool.

This package imports only `distill.errors`, the torch-free `distill.losses.names` and `distill.builtin` (for the
`builtin:` prefix): everything else imports it.
"""

from distill.recipe.base import BUILTIN_PREFIX, FieldProblem, Section, _section_type
from distill.recipe.data import DataConfig, DataFormat, RecordFormat
from distill.recipe.loading import apply_override, check_paths, dump_recipe, load_recipe, validate_recipe
from distill.recipe.objective import OBJECTIVE_CONFIGS, ObjectiveConfig, OffPolicyConfig
from distill.recipe.schema import Recipe
from distill.recipe.student import FromTeacher, StudentConfig
from distill.recipe.teacher import TEACHER_DTYPES, TeacherConfig, TeacherDtype
from distill.recipe.training import TrainingConfig

__all__ = [
    "BUILTIN_PREFIX",
    "OBJECTIVE_CONFIGS",
    "TEACHER_DTYPES",
    "DataConfig",
    "DataFormat",
    "FieldProblem",
    "FromTeacher",
    "ObjectiveConfig",
    "OffPolicyConfig",
    "Recipe",
    "RecordFormat",
    "Section",
    "StudentConfig",
    "TeacherConfig",
    "TeacherDtype",
    "TrainingConfig",
    "_section_type",
    "apply_override",
    "check_paths",
    "dump_recipe",
    "load_recipe",
    "validate_recipe",
]
