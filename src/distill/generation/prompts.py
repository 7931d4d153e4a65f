"""The prompts a generation runs over, as the teacher will see them.

A prompt's id is its position in the source (after `max_prompts`), so the same recipe always gives the same ids
and a resume can tell which (prompt, sample) pairs are done. A chat prompt keeps its turns (`messages`): the local
backend renders them with the tokenizer's chat template, an API backend sends them to `/v1/chat/completions` and the
server renders them. A plain prompt (`chat: false`) is text, sent to `/v1/completions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from distill.data.sources import read_records
from distill.errors import DataError, RecipeError
from distill.recipe.generate import GenerateConfig, TaskPrompts


@dataclass(frozen=True)
class Prompt:
    id: int
    record: dict[str, Any]  # the source record, for the verifier (answer, reasoning-gym entry, ...)
    messages: list[dict[str, str]] | None  # the conversation the teacher answers (chat), else None
    text: str | None  # the plain prompt (not chat), else None

    def training_row(self, completion: str) -> dict[str, Any]:
        """The record `data.train` reads: chat turns with the answer as the last assistant turn, else
        prompt/completion (loss on the completion only, either way)."""
        if self.messages is not None:
            return {"messages": [*self.messages, {"role": "assistant", "content": completion}]}
        return {"prompt": self.text, "completion": completion}


def load_prompts(config: GenerateConfig) -> list[Prompt]:
    records = _task_records(config.task) if config.task is not None else _source_records(config)
    if config.max_prompts is not None:
        records = records[: config.max_prompts]
    return [_prompt(i, record, config) for i, record in enumerate(records)]


def _source_records(config: GenerateConfig) -> list[dict[str, Any]]:
    assert config.prompts is not None
    return list(read_records(config.prompts, "generate.prompts", config.max_prompts, config.encoding))


def _task_records(task: TaskPrompts) -> list[dict[str, Any]]:
    import reasoning_gym

    try:
        data = reasoning_gym.create_dataset(task.name, size=task.size, seed=task.seed, **task.config)
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise RecipeError(f"generate.task: reasoning-gym could not make {task.name!r} with {task.config}: "
                          f"{' '.join(str(exc).split())}") from None
    # a JSON round trip keeps the records exactly as they are written to the journal and read back
    return [json.loads(json.dumps({"prompt": item["question"], "answer": item["answer"], "entry": item},
                                  default=str)) for item in data]


def _prompt(index: int, record: dict[str, Any], config: GenerateConfig) -> Prompt:
    where = f"generate.prompts record {index}"
    if "messages" in record and config.prompt_field not in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
            raise DataError(f"{where}: `messages` must be a non-empty list of {{role, content}} turns with text "
                            "content")
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]  # a reference answer: the teacher writes its own
        if not messages:
            raise DataError(f"{where}: `messages` holds only an assistant turn; nothing to answer")
        return Prompt(index, record, [{"role": m["role"], "content": m["content"]} for m in messages], None)
    value = record.get(config.prompt_field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: no `{config.prompt_field}` text and no `messages` (set generate.prompt_field)")
    text = value
    if config.template is not None:
        try:
            text = config.template.format(**{**record, "prompt": value})
        except (KeyError, IndexError) as exc:
            raise RecipeError(f"generate.template: {where} has no field {exc}") from None
    if not config.chat:
        return Prompt(index, record, None, text)
    system = [{"role": "system", "content": config.system}] if config.system else []
    return Prompt(index, record, [*system, {"role": "user", "content": text}], None)


def prompt_ids(prompt: Prompt, tokenizer: Any) -> list[int]:
    """The token ids a local teacher continues: the chat template with its generation prompt, or the plain text
    with the tokenizer's special tokens (BOS)."""
    if prompt.messages is None:
        return list(tokenizer(prompt.text)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("generate: the prompts are chat turns but the tokenizer has no chat template; set "
                        "`generate.chat: false` for plain prompts, or use a chat model's tokenizer")
    rendered = tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
