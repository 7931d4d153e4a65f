"""The `student` section: exactly one of (a) an existing model, (b) a fresh architecture, (c) layers of the teacher."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from distill.recipe.base import FieldProblem, Section


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
