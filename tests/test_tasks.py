"""Verifiable generation tasks: deterministic items, extraction and scoring, task files, batched greedy generation.

The model is a randomly initialised 2-layer Llama with an in-process BPE tokenizer carrying the same ChatML chat
template as `builtin:tiny-teacher` (built here rather than materialising the trained teacher, which takes far
longer than this whole file).
"""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.errors import DataError
from distill.eval.generation import Generation, generate, stop_token_ids
from distill.eval.tasks import (
    BUILTIN_TASKS,
    TaskItem,
    TaskResult,
    TaskSpec,
    extract_answer,
    load_task,
    render_prompt,
    run_task,
    score,
    task_items,
)


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaForCausalLM

    from distill.builtin.corpus import tiny_stories
    from distill.builtin.tiny_models import tiny_llama_config
    from distill.builtin.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(tiny_stories(150, seed=0), vocab_size=320)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden=32, layers=2, heads=2, kv_heads=1)).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model gains nothing from threads; on a busy 2-core box they cost 20x
    yield model, tokenizer
    torch.set_num_threads(threads)


def _spec(extract: str = "last_number", **source) -> TaskSpec:
    return TaskSpec.model_validate({"name": "t", "version": 1, "description": "test", "extract": extract,
                                    "max_new_tokens": 8, "source": source or {"jsonl": {"path": "unused.jsonl"}}})


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------------------- items


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_builtin_items_are_deterministic_and_extend_with_n(name):
    spec = load_task(f"builtin:{name}")
    assert spec is load_task(name) and spec.version >= 1 and spec.description
    first, again = task_items(spec, 6, seed=0), task_items(spec, 6, seed=0)
    as_tuples = [(i.id, i.question, i.answer) for i in first]
    assert as_tuples == [(i.id, i.question, i.answer) for i in again]
    assert len({i.id for i in first}) == 6 and all(i.question and i.answer for i in first)
    assert [(i.id, i.question) for i in task_items(spec, 3, seed=0)] == [(i.id, i.question) for i in first[:3]]
    other = task_items(spec, 6, seed=1)
    # reasoning-gym seeds item i with seed + i; without hashing the seed, seed 1 would repeat 5 of seed 0's items
    assert not {i.question for i in first} & {i.question for i in other}


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_oracle_outputs_score_one_and_wrong_ones_zero(name):
    spec = BUILTIN_TASKS[name]
    for item in task_items(spec, 8, seed=3):
        wrong = str(int(float(item.answer)) + 1)
        correct = [item.answer, f"Let me compute it.\n{item.question[:20]} ... so the answer is {item.answer}.",
                   f"Answer: {item.answer}", f"**{item.answer}**"]
        assert [score(spec, item, out) for out in correct] == [1.0] * 4, item
        assert score(spec, item, f"The answer is {wrong}.") == 0.0
        assert score(spec, item, "") == 0.0 and score(spec, item, "I do not know.") == 0.0


def test_shaping_rewards_of_reasoning_gym_are_not_accuracy():
    spec = BUILTIN_TASKS["gsm_symbolic"]
    item = task_items(spec, 1, seed=0)[0]
    wrong = f"The answer is {int(item.answer) + 7}."
    assert score(spec, item, wrong) == 0.0
    # gsm_symbolic's own scorer pays 0.01 for any number; partial_credit exposes the raw value
    assert score(spec.model_copy(update={"partial_credit": True}), item, wrong) == pytest.approx(0.01)


# ------------------------------------------------------------------------------------------ extraction, scoring


@pytest.mark.parametrize(("extract", "output", "expected"), [
    ("last_number", "12 apples and 276 pears, so the answer is 288.", "288"),
    ("last_number", "Total: 1,288.50 dollars", "1288.5"),
    ("last_number", "5 - 3 - 6 = -4", "-4"),
    ("last_number", "x = 5.0\n", "5"),
    ("last_number", "no digits here", ""),
    ("after_answer", "We add them.\nAnswer: 288\nDone", "288"),
    ("after_answer", "First answer: 3. The final answer is **Paris**.", "Paris"),
    ("after_answer", "The answer is:\n\n-12\n", "-12"),
    ("after_answer", "288", ""),
    ("first_line", "\n  `lraw`.\nbecause ...", "lraw"),
    ("full", "  two words \n", "two words"),
])
def test_extract_modes(extract, output, expected):
    assert extract_answer(_spec(extract), output) == expected


@pytest.mark.parametrize(("extract", "output", "answer", "expected"), [
    ("first_line", "5.0", "5", 1.0),
    ("first_line", "1,000", "1000", 1.0),
    ("first_line", "+7", "7", 1.0),
    ("first_line", "Paris.\nIt is the capital.", "paris", 1.0),
    ("full", "New   York", "new york", 1.0),
    ("first_line", "50", "5", 0.0),
    ("first_line", "5.01", "5", 0.0),
    ("full", "Paris is the answer", "Paris", 0.0),
    ("last_number", "", "0", 0.0),
])
def test_exact_match_of_file_tasks_normalises_case_space_and_numbers(extract, output, answer, expected):
    assert score(_spec(extract), TaskItem("0", "q", answer), output) == expected


# -------------------------------------------------------------------------------------------------- task files


def test_task_file_with_relative_jsonl(tmp_path, monkeypatch):
    rows = [{"id": f"q{i}", "q": f"What is {i} + {i}?", "a": 2 * i} for i in range(5)]
    _write(tmp_path / "tasks" / "data" / "qa.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task_file = _write(tmp_path / "tasks" / "doubling.yaml", """\
        name: doubling
        version: 2
        description: Double a number; the last number is checked.
        source: {jsonl: {path: data/qa.jsonl, question_field: q, answer_field: a}}
        prompt: "{question} Reply with a number."
        extract: last_number
        max_new_tokens: 8
    """)
    monkeypatch.chdir(tmp_path)  # the data path is relative to the task file, not to the current directory
    spec = load_task(str(task_file))
    assert Path(spec.source.jsonl.path) == (tmp_path / "tasks" / "data" / "qa.jsonl").resolve()
    items = task_items(spec, 3, seed=0)
    assert [i.id for i in items] == [i.id for i in task_items(spec, 3, seed=0)]
    assert len(task_items(spec, 50, seed=0)) == 5  # a file gives what it has
    assert {i.id for i in task_items(spec, 50, seed=0)} == {r["id"] for r in rows}
    item = next(i for i in task_items(spec, 5, seed=0) if i.id == "q3")
    assert (item.question, item.answer) == ("What is 3 + 3?", "6")
    assert score(spec, item, "3 + 3 = 6.0") == 1.0 and score(spec, item, "3 + 3 = 7") == 0.0


_TASK_HEAD = "name: x\nversion: 1\ndescription: d\nmax_new_tokens: 8\nextract: last_number\n"


@pytest.mark.parametrize(("text", "message"), [
    (_TASK_HEAD.replace("extract:", "extrct:") + "source: {jsonl: {path: q.jsonl}}\n",
     r"extrct: unknown key \(did you mean `extract`\?\)"),
    (_TASK_HEAD + "source: {jsonl: {path: q.jsonl, question_feld: q}}\n",
     r"source\.jsonl\.question_feld: unknown key \(did you mean `question_field`"),
    (_TASK_HEAD + "source: {jsonl: {path: nowhere.jsonl}}\n", r"source\.jsonl\.path: no such file: .*nowhere\.jsonl"),
    (_TASK_HEAD + "source: {reasoning_gym: {dataset: chain_sum, config: {terms: 3}}}",
     r"source\.reasoning_gym\.config: .*terms"),
    (_TASK_HEAD + "prompt: 'Q: {q}'\nsource: {reasoning_gym: {dataset: chain_sum}}\n",
     r"prompt: must contain `\{question\}`"),
])
def test_task_file_problems_are_data_errors(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load_task(str(_write(tmp_path / "task.yaml", text)))


def test_missing_task_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="task file not found"):
        load_task(str(tmp_path / "absent.yaml"))


def test_unknown_task_name_lists_the_builtins():
    with pytest.raises(DataError, match=r"did you mean `builtin:chain_sum`\?.*builtin:gsm_symbolic"):
        load_task("chain_sun")
    with pytest.raises(DataError, match=r"did you mean 'chain_sum'"):
        task_items(_spec(reasoning_gym={"dataset": "chain_sun"}), 2, seed=0)


def test_python_escape_hatch_for_items_and_verifier(tmp_path, monkeypatch):
    _write(tmp_path / "my_task.py", """\
        def items(n, seed, start=0):
            return [{"id": f"p{i}", "question": f"Say {start + i} twice.", "answer": str(start + i)} for i in range(n)]

        def twice(extracted, item):
            return float(extracted == f"{item.answer} {item.answer}")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    task_file = _write(tmp_path / "say.yaml", """\
        name: say
        version: 1
        description: Repeat a number.
        source: {python: {function: "my_task:items", kwargs: {start: 10}}}
        extract: first_line
        verifier: "my_task:twice"
        max_new_tokens: 8
    """)
    spec = load_task(str(task_file))
    items = task_items(spec, 2, seed=0)
    assert [(i.id, i.answer) for i in items] == [("p0", "10"), ("p1", "11")]
    assert score(spec, items[1], "11 11\n") == 1.0 and score(spec, items[1], "11") == 0.0
    broken = _write(tmp_path / "broken.yaml", task_file.read_text().replace("my_task:twice", "my_task:thrice"))
    with pytest.raises(DataError, match=r"verifier: cannot import 'my_task:thrice'"):
        load_task(str(broken))


# --------------------------------------------------------------------------------------------------- generation


PROMPTS = ["Once upon a time", "Hi", "The little dog ran to the park and saw a big red ball under the tree", "A cat"]


def test_batched_generation_equals_one_by_one_and_restores_state(tiny):
    model, tokenizer = tiny
    model.train()
    before = (tokenizer.padding_side, tokenizer.pad_token)
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=3, progress=False)
    assert model.training and (tokenizer.padding_side, tokenizer.pad_token) == before
    model.eval()
    single = [generate(model, tokenizer, [p], max_new_tokens=10, batch_size=1, progress=False) for p in PROMPTS]
    assert not model.training
    assert batched.texts == [g.texts[0] for g in single]
    assert batched.lengths == [g.lengths[0] for g in single]
    assert batched.new_tokens == sum(batched.lengths) and batched.seconds > 0
    # and both equal plain Hugging Face generation of each unpadded prompt
    with torch.inference_mode():
        for prompt, text in zip(PROMPTS, batched.texts, strict=True):
            ids = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=10, do_sample=False,
                                 eos_token_id=stop_token_ids(model, tokenizer), pad_token_id=0)
            assert text == tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_generation_stops_at_eos_and_counts_tokens_up_to_it(tiny):
    model, tokenizer = tiny
    free = generate(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=4, progress=False)
    assert free.lengths == [10] * 4 and free.stopped == [False] * 4  # untrained: never says EOS by itself
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    with torch.inference_mode():
        tokens = [model.generate(torch.tensor([r]), max_new_tokens=10, do_sample=False,
                                 eos_token_id=stop_token_ids(model, tokenizer), pad_token_id=0)[0, len(r):].tolist()
                  for r in rows]
    stop = tokens[0][3]  # a token the model emits in the middle of the first row
    expected = [row.index(stop) + 1 if stop in row else 10 for row in tokens]
    original = model.generation_config.eos_token_id
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None  # padding falls back to EOS
    try:
        model.generation_config.eos_token_id = stop
        for tok in (tokenizer, no_pad):
            got = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=4, progress=False)
            assert got.lengths == expected and got.new_tokens == sum(expected)
            assert got.stopped == [n < 10 or tokens[i][9] == stop for i, n in enumerate(expected)]
            assert got.texts[0] == tokenizer.decode(tokens[0][:expected[0] - 1], skip_special_tokens=True)
    finally:
        model.generation_config.eos_token_id = original
    assert len(set(expected)) > 1  # the rows really stop at different points


def test_chat_models_stop_at_the_end_of_their_turn(tiny):
    model, tokenizer = tiny
    original = model.generation_config.eos_token_id
    try:
        model.generation_config.eos_token_id = None  # ChatML's <|im_end|> is found from the tokenizer alone
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, im_end]
    finally:
        model.generation_config.eos_token_id = original


def test_run_task_end_to_end_is_honest(tiny):
    model, tokenizer = tiny
    spec = BUILTIN_TASKS["chain_sum"]
    assert render_prompt(spec, tokenizer, "2 + 2 =").startswith("<|im_start|>user\n2 + 2 =\nReply with only the final")
    result = run_task(model, tokenizer, spec, n=4, seed=0, batch_size=2, progress=True)
    assert isinstance(result.scores, np.ndarray) and result.scores.dtype == np.float64 and result.scores.shape == (4,)
    assert set(result.scores.tolist()) <= {0.0, 1.0}
    assert result.accuracy == 0.0  # a random model knows no arithmetic, and nothing pretends it does
    assert [i.id for i in result.items] == [i.id for i in task_items(spec, 4, seed=0)]
    assert (result.task, result.version, len(result.outputs), len(result.extracted)) == ("chain_sum", 1, 4, 4)
    examples = result.examples(2)
    assert len(examples) == 2 and set(examples[0]) == {"id", "question", "expected", "output", "extracted", "score",
                                                       "truncated"}
    assert examples[0]["expected"] == result.items[0].answer and examples[0]["output"] == result.outputs[0]
    # a random model rambles: its answers run into the budget, and the result says so item by item
    assert result.truncated == [n == spec.max_new_tokens and not s for n, s in
                                zip(result.generation.lengths, result.generation.stopped, strict=True)]
    assert [e["truncated"] for e in examples] == result.truncated[:2]
    assert result.truncated_share == sum(result.truncated) / 4 and any(result.truncated)


def test_the_share_cut_off_by_the_budget_is_known_only_where_rows_recorded_stopping():
    items = [TaskItem(str(i), "q", "1") for i in range(4)]

    def outcome(stopped: list[bool]) -> TaskResult:
        generation = Generation(["1"] * 4, 8, 1.0, [2, 8, 8, 2] if stopped else [], stopped)
        return TaskResult("t", 1, 0, np.zeros(4), items, ["1"] * 4, ["1"] * 4, generation)

    cut = outcome([True, False, False, True])
    assert cut.truncated == [False, True, True, False] and cut.truncated_share == 0.5
    assert [e["truncated"] for e in cut.examples(4)] == [False, True, True, False]
    unknown = outcome([])  # a Generation made without per-row stops
    assert unknown.truncated == [None] * 4 and unknown.truncated_share is None
    assert [e["truncated"] for e in unknown.examples(2)] == [None, None]


def test_the_task_block_records_the_budget_and_the_share_of_answers_cut_off(tiny):
    from distill.eval.suite import Suite, _task_block
    from distill.results.schema import TaskResult as TaskBlock

    model, tokenizer = tiny
    block = _task_block("chain_sum", 3, {"m": model}, tokenizer, Suite(models=[], sets=[]))
    task = TaskBlock.for_writing(block["chain_sum"])  # the schema names every field the block holds
    assert task.max_new_tokens == BUILTIN_TASKS["chain_sum"].max_new_tokens == 32
    examples = task.models["m"].examples
    assert all(isinstance(e.truncated, bool) for e in examples) and len(examples) == 3
    assert task.models["m"].truncated == sum(e.truncated for e in examples) / 3


def test_builtin_budgets_leave_room_for_the_answer():
    """gsm_symbolic's reference solutions alone run to ~240 tokens (spec.py): 256 (v1) left a model's own, wordier
    reasoning little room, so v2 allows 512; number-only answers need a few tokens."""
    gsm = BUILTIN_TASKS["gsm_symbolic"]
    assert (gsm.version, gsm.max_new_tokens) == (2, 512)
    assert BUILTIN_TASKS["basic_arithmetic"].max_new_tokens == 48 and BUILTIN_TASKS["chain_sum"].max_new_tokens == 32
