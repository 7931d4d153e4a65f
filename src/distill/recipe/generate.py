"""The `generate` section: what `distill generate` asks the teacher to write, how each completion is judged, and
where the kept ones go (docs/generate.md).

Prompts come from a data source (`prompts`, records with `prompt` or chat `messages`) or from a reasoning-gym task
(`task`); exactly one of the two. The sampling settings are their own sub-section, so "temperature" here is the
generation temperature and never the loss's or the cache's. `defenses` names a key file whose serve-time defenses
the local teacher writes through (docs/defenses.md), so the training data carries a watermark or canaries.
"""

from __future__ import annotations

import string
from typing import Any

from pydantic import Field, field_validator, model_validator

from distill.errors import RecipeError
from distill.recipe.base import FieldProblem, Section
from distill.recipe.dedup import DedupSpec
from distill.recipe.verifier import VerifierSpec, verifier_spec


class SamplingConfig(Section):
    temperature: float = Field(default=0.8, ge=0.0, description="Generation temperature; 0 = greedy (then every "
                               "sample of a prompt is the same text, and `n` > 1 only repeats it).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling: draw from the smallest set of "
                         "most likely tokens whose mass reaches top_p.")
    max_new_tokens: int = Field(default=256, ge=1, description="Tokens a completion may have; one that runs out is "
                                "kept with `finish_reason: length` (verifiers usually reject it).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: the completion ends before the first "
                            "one (besides the tokenizer's EOS and the chat end-of-turn token, which always stop).")
    seed: int = Field(default=0, description="Seeds every sample: a sample's text depends only on (seed, prompt id, "
                      "sample index) on the local backend, whatever the batch size or a resume.")

    @field_validator("stop")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value


class TaskPrompts(Section):
    name: str = Field(description="reasoning-gym dataset name, e.g. `basic_arithmetic`, `gsm_symbolic`.")
    size: int = Field(default=100, ge=1, description="Problems to generate.")
    seed: int = Field(default=0, description="The task generator's seed. reasoning-gym draws item i from seed + i, so "
                      "seeds s and s + 1 share all but one item: held-out problems need a seed at least `size` away "
                      "(and short problems can still recur: compare the questions).")
    config: dict[str, Any] = Field(default_factory=dict, description="The dataset's own options (e.g. `min_terms`).")


class GenerateConfig(Section):
    prompts: str | None = Field(default=None, description="A data source (as `data.train` reads: .jsonl, .parquet, "
                                "a `datasets` folder, `builtin:NAME`) whose records hold `prompt_field` or chat "
                                "`messages` (the conversation so far; the teacher writes the next assistant turn).")
    task: TaskPrompts | None = Field(default=None, description="Or: problems from a reasoning-gym task. Each record "
                                     "is {prompt: question, answer, entry: the whole item}, so the `reasoning_gym` "
                                     "verifier can call the task's own `score_answer`.")
    prompt_field: str = Field(default="prompt", description="Record field holding a plain prompt.")
    template: str | None = Field(default=None, description="Python format string applied to a plain prompt, with "
                                 "`{prompt}` and any other record field, e.g. \"{prompt}\\nEnd with 'Answer: N'.\"")
    system: str | None = Field(default=None, description="A system message put before a plain prompt's user turn.")
    chat: bool = Field(default=True, description="Render a plain prompt as a user turn with the tokenizer's chat "
                       "template (`messages` records always are); false = the prompt text as it is.")
    max_prompts: int | None = Field(default=None, ge=1, description="Use only the first N prompts.")
    n: int = Field(default=4, ge=1, description="Completions sampled per prompt.")
    max_accepted: int | None = Field(default=None, ge=1, description="Rejection sampling's m: keep at most this many "
                                     "accepted completions per prompt (the lowest sample indices); null = all.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Generation settings.")
    verifier: VerifierSpec | None = Field(default=None, description="How a completion is judged (a kind's name or a "
                                          "mapping with `kind`: reasoning_gym, final_number, exact, regex, python); "
                                          "null = every completion is accepted.")
    dedup: DedupSpec | None = Field(default_factory=DedupSpec, description="Removal of exact and near-duplicate "
                                    "accepted completions; null = keep duplicates.")
    output: str = Field(description="Folder for the results: `train.jsonl` (kept rows, readable by `data.train`), "
                        "`samples.jsonl` (every sample with its verdict), `manifest.json`, and the journal a resume "
                        "reads.")
    batch_size: int = Field(default=16, ge=1, description="Rows per batch of the local backend; concurrent "
                            "requests of an API teacher are `teacher.api.max_concurrency`.")
    encoding: str = Field(default="utf-8", description="Text encoding of a .jsonl `prompts` file.")
    defenses: str | None = Field(default=None, description="A defense key file (`distill defenses keygen`; "
                                 "docs/defenses.md): the local teacher writes through its processors (watermark, "
                                 "canaries, product of experts, antidistillation) and its forced temperature. The "
                                 "run's fingerprint records the file's public view and a hash of it (a changed key "
                                 "is another run), never a secret. An API teacher applies its own (`distill serve "
                                 "--defenses`), so it is refused there.")

    @field_validator("verifier", mode="before")
    @classmethod
    def _verifier(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            return verifier_spec(value)
        except RecipeError as exc:  # its message names `verifier.…`; pydantic puts `generate.verifier` before it
            raise ValueError(str(exc).removeprefix("verifier.")) from None

    @field_validator("template")
    @classmethod
    def _template_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a format string: {exc}") from None
        if "prompt" not in names:
            raise ValueError("must contain {prompt}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> GenerateConfig:
        if (self.prompts is None) == (self.task is None):
            raise FieldProblem("prompts", "set `prompts` (a data source) or `task` (a reasoning-gym task), not both "
                               "and not neither")
        if self.max_accepted is not None and self.max_accepted > self.n:
            raise FieldProblem("max_accepted", f"is {self.max_accepted}, more than the {self.n} samples per prompt "
                               "(`n`)")
        return self
