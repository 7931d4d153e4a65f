"""A task's items, answers and scores: deterministic items, answer extraction, exact-match scoring, prompts, and
`run_task`, which generates and scores. The extraction helpers (marked final answers, exact number values) are
shared with the verifiers of `distill generate` (generation/verifiers.py), so both read an answer the same way.

Items are deterministic in (spec, n, seed) and a larger n extends the same list, because the caller bootstraps over
items and pairs models item by item. Scores are 1/0 by default: reasoning-gym's scorers give shaping rewards meant
for RL (gsm_symbolic pays 0.01 for any wrong number), which would make a model that never answers correctly look
like it scores above 0.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import numpy as np

from distill.errors import DataError
from distill.eval.generation import Generation, generate
from distill.eval.tasks.spec import TaskSpec, import_callable, rg_dataset

# ------------------------------------------------------------------------------------------------------- items


@dataclass
class TaskItem:
    id: str
    question: str
    answer: str
    entry: dict[str, Any] | None = None  # the reasoning-gym item, which its scorer needs


def task_items(spec: TaskSpec, n: int, seed: int) -> list[TaskItem]:
    """The first n items for `seed`, always the same ones in the same order; a larger n extends the list. File and
    Python sources give fewer when they hold fewer."""
    if n < 1:
        raise DataError(f"task {spec.name!r}: the number of items must be at least 1, got {n}")
    src = spec.source
    if src.reasoning_gym is not None:
        rg = src.reasoning_gym
        dataset = rg_dataset(rg.dataset, json.dumps(rg.config, sort_keys=True), _rg_seed(seed), n, spec.name)
        return [TaskItem(f"{rg.dataset}/{seed}/{i}", e["question"], str(e["answer"]), e)
                for i, e in enumerate(dataset[i] for i in range(n))]
    if src.jsonl is not None:
        from distill.data.sources import read_records

        js = src.jsonl
        records = read_records(js.path, field=f"task {spec.name!r} source.jsonl.path")
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        return [_record_item(records[i], i, js.question_field, js.answer_field, js.id_field, f"{js.path}, record {i}")
                for i in order[:n]]
    assert src.python is not None
    made = import_callable(src.python.function, f"task {spec.name!r} source.python.function")(n=n, seed=seed,
                                                                                        **src.python.kwargs)
    return [_record_item(r, i, "question", "answer", "id", f"{src.python.function}, record {i}")
            for i, r in enumerate(list(made)[:n])]


def _record_item(record: Any, index: int, question: str, answer: str, id_field: str, where: str) -> TaskItem:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a mapping with `{question}` and `{answer}`, got {type(record).__name__}")
    for name in (question, answer):
        if record.get(name) is None:
            raise DataError(f"{where}: missing field `{name}` (set question_field / answer_field in the task)")
    return TaskItem(str(record.get(id_field, index)), str(record[question]), str(record[answer]), record.get("entry"))


def _rg_seed(seed: int) -> int:
    """reasoning-gym seeds item i with seed + i, so seeds 0 and 1 would share all but one item; hashing avoids it."""
    return int.from_bytes(hashlib.sha256(f"distill-eval:{seed}".encode()).digest()[:4], "big")


# ------------------------------------------------------------------------------------------ extraction, scoring

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ANSWER_MARK = re.compile(r"answer\s*(?:is|:)|####", re.IGNORECASE)
_WRAPPING = " \t\n\"'`*$"


def extract_answer(spec: TaskSpec, output: str) -> str:
    """The final answer in `output`, as `spec.extract` says (see TaskSpec.extract); "" when there is none."""
    return extract_text(spec.extract, output)


def extract_text(mode: str, output: str) -> str:
    """The answer in `output` by extraction mode (an `Extract`, see TaskSpec.extract); "" when there is none."""
    if mode == "full":
        return output.strip()
    if mode == "last_number":
        numbers = _NUMBER.findall(output)
        return _canonical_number(numbers[-1]) if numbers else ""
    if mode == "after_answer":
        return _after_last(_ANSWER_MARK, output)
    return next((_clean(line) for line in output.splitlines() if _clean(line)), "")


def _after_last(mark: re.Pattern[str], output: str) -> str:
    """What follows the last `mark`: the rest of its line, or the next non-empty line; "" without a mark."""
    marks = list(mark.finditer(output))
    rest = output[marks[-1].end():] if marks else ""
    return next((_clean(line) for line in rest.splitlines() if _clean(line)), "")


def _clean(text: str) -> str:
    """Drop what small models wrap answers in: whitespace, quotes, markdown bold or code, `$`, a final period."""
    return text.strip(_WRAPPING).rstrip(".,;:!").strip(_WRAPPING)


def _canonical_number(text: str) -> str:
    """`+1,000.50` → `1000.5`, `5.0` → `5`, `-0` → `0`: one spelling per value, for checkers that compare strings."""
    value = Decimal(text.replace(",", ""))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def normalise(text: str) -> str:
    """For exact match: wrapping dropped, case folded, runs of spaces collapsed, numbers spelled canonically."""
    text = " ".join(_clean(text).casefold().split())
    if re.fullmatch(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?", text) and any(c.isdigit() for c in text):
        try:
            return _canonical_number(text)
        except InvalidOperation:
            pass
    return text


# A solution's marked final answer and exact number values: what generate's verifiers check (generation/verifiers.py)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_HASHES = re.compile(r"####([^\n]*?)\s*\Z")  # on the last non-empty line only: elsewhere it is a markdown heading
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_VALUE = re.compile(rf"\\d?frac\s*\{{\s*({_NUMBER.pattern})\s*\}}\s*\{{\s*({_NUMBER.pattern})\s*\}}"
                    rf"|({_NUMBER.pattern})(?:\s*/\s*({_NUMBER.pattern}))?")


def boxed(text: str) -> str | None:
    """What the last `\\boxed{…}` (or `\\fbox{…}`) holds, nested braces included (`\\boxed{\\frac{3}{4}}` gives
    `\\frac{3}{4}`); None without one, or when the last one is never closed (a generation cut off mid-answer)."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    depth = 1
    for i in range(starts[-1] if starts else len(text), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[starts[-1]:i]
    return None


def marked_answers(output: str) -> list[str]:
    """The spans `output` marks as its final answer, strongest mark first, each cleaned like `first_line` and empty
    ones left out: the last `<answer>…</answer>` (reasoning-gym's format); what follows `####` when it is on the last
    non-empty line (GSM8K's format; anywhere else `####` is a markdown heading); the last `\\boxed{…}` (MATH's); and
    what follows the last `answer is` / `answer:`, to the end of its line or on the next non-empty one."""
    tags, hashes = _ANSWER_TAG.findall(output), _HASHES.search(output)
    spans = [tags[-1] if tags else "", hashes[1] if hashes else "", boxed(output) or "",
             _after_last(_ANSWER_PHRASE, output)]
    return [span for span in map(_clean, spans) if span]


def numbers(text: str) -> list[tuple[str, Fraction]]:
    """Every number in `text`, in order, as (its text, its exact value): integers and decimals with an optional sign
    and thousands separators (`-1,234.50`; LaTeX's `1{,}234`; `−` as a minus), and simple fractions (`3/4`, `-3 / 4`,
    `\\frac{3}{4}`, `\\dfrac{3}{4}`), so `0.75` and `3/4` have one value. Not numbers here: `.5` (no leading digit),
    `1e5` (read as 1), words (`five`); a `%` or unit is ignored (`50%` is 50). Dates like `12/25` read as fractions."""
    text = text.replace("{,}", ",").replace("\u2212", "-")
    found = []
    for m in _VALUE.finditer(text):
        numerator, denominator = (m[1], m[2]) if m[1] else (m[3], m[4])
        try:
            value = Fraction(numerator.replace(",", "")) / Fraction((denominator or "1").replace(",", ""))
        except ZeroDivisionError:
            continue
        found.append((m[0], value))
    return found


def score(spec: TaskSpec, item: TaskItem, output: str) -> float:
    """The item's score for one generation: 1.0 or 0.0 unless `spec.partial_credit`. The checker is `spec.verifier`
    if set, else reasoning-gym's own scorer on the extracted answer, else normalised exact match."""
    extracted = extract_answer(spec, output)
    if spec.verifier is not None:
        raw = float(import_callable(spec.verifier, f"task {spec.name!r} verifier")(extracted, item))
        if not 0.0 <= raw <= 1.0:
            raise DataError(f"task {spec.name!r}: verifier {spec.verifier} returned {raw}, outside [0, 1]")
    elif spec.source.reasoning_gym is not None and item.entry is not None:
        rg = spec.source.reasoning_gym
        scorer = rg_dataset(rg.dataset, json.dumps(rg.config, sort_keys=True), 0, 1, spec.name)
        raw = float(scorer.score_answer(extracted, entry=item.entry)) if extracted else 0.0
    else:
        raw = float(bool(extracted) and normalise(extracted) == normalise(item.answer))
    return raw if spec.partial_credit else float(raw >= 1.0 - 1e-9)


# --------------------------------------------------------------------------------------------------- generation


def uses_chat_template(spec: TaskSpec, tokenizer: Any) -> bool:
    return spec.chat_template and bool(getattr(tokenizer, "chat_template", None))


def render_prompt(spec: TaskSpec, tokenizer: Any, question: str) -> str:
    """The text the model continues: the filled template, as a user turn of the chat template when there is one."""
    text = spec.prompt.format(question=question)
    if not uses_chat_template(spec, tokenizer):
        return text
    messages = [{"role": "system", "content": spec.system}] if spec.system is not None else []
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class TaskResult:
    task: str
    version: int
    seed: int
    scores: np.ndarray  # per item, float, in item order
    items: list[TaskItem]
    outputs: list[str]
    extracted: list[str]
    generation: Generation

    @property
    def accuracy(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else float("nan")

    @property
    def truncated(self) -> list[bool | None]:
        """Per item, whether its generation ran into the task's max_new_tokens: cut off, and scored as it stood, so
        a low score may be the budget's, not the model's. None when the generation did not record where rows stopped."""
        stopped = self.generation.stopped
        return [not s for s in stopped] if len(stopped) == len(self.items) else [None] * len(self.items)

    @property
    def truncated_share(self) -> float | None:
        """The share of items cut off by the budget; None when unknown."""
        cut = self.truncated
        return sum(map(bool, cut)) / len(cut) if cut and None not in cut else None

    def examples(self, k: int) -> list[dict[str, Any]]:
        """The first k items with what the model said, for reports (first, not best: no cherry-picking)."""
        return [{"id": item.id, "question": item.question, "expected": item.answer, "output": output,
                 "extracted": extracted, "score": float(s), "truncated": cut}
                for item, output, extracted, s, cut in zip(self.items, self.outputs, self.extracted, self.scores,
                                                           self.truncated, strict=True)][:k]


def run_task(model: Any, tokenizer: Any, spec: TaskSpec, *, n: int, seed: int = 0, batch_size: int = 8,
             progress: bool = True) -> TaskResult:
    """Generate an answer for each of the task's first n items (fewer if a file holds fewer) and score it."""
    items = task_items(spec, n, seed)
    prompts = [render_prompt(spec, tokenizer, item.question) for item in items]
    generation = generate(model, tokenizer, prompts, max_new_tokens=spec.max_new_tokens, batch_size=batch_size,
                          progress=progress, add_special_tokens=not uses_chat_template(spec, tokenizer),
                          description=f"{spec.name} v{spec.version}")
    scores = np.array([score(spec, item, text) for item, text in zip(items, generation.texts, strict=True)],
                      dtype=np.float64)
    extracted = [extract_answer(spec, text) for text in generation.texts]
    return TaskResult(spec.name, spec.version, seed, scores, items, generation.texts, extracted, generation)
