"""`distill eval --data` on chat and prompt/completion records: only the tokens training learns are scored (the
assistant turns, the completion), checked against an NLL computed by hand over the right tokens; the contamination
check reads the eval records as it reads training records; and bad input is one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from distill.builtin.tiny_models import tiny_llama_config
from distill.data.formatting import encode_messages
from distill.errors import DataError
from distill.eval.cli_support import build_suite
from distill.eval.suite import run_suite

WORDS = ("anna", "saw", "a", "big", "dog", "near", "the", "old", "red", "barn", "and", "then", "she", "ran", "home",
         "to", "tell", "her", "mother", "about", "it")


def sentence(seed: int, n: int = 12) -> str:
    return " ".join(WORDS[(seed * 7 + 3 * i) % len(WORDS)] for i in range(n))


CHATS = [{"messages": [{"role": "user", "content": sentence(i, 6)}, {"role": "assistant", "content": sentence(i + 1)},
                       {"role": "user", "content": sentence(i + 2, 5)},
                       {"role": "assistant", "content": sentence(i + 3, 9)}]} for i in range(5)]
PAIRS = [{"prompt": sentence(i, 7), "completion": " " + sentence(i + 5, 10)} for i in range(5)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-formats")
    folders = {}
    for name, seed in (("teacher", 0), ("student", 1)):
        torch.manual_seed(seed)
        config = tiny_llama_config(len(tiny_tokenizer), hidden=32, layers=1, heads=2, kv_heads=1)
        config.initializer_range = 0.5  # far from uniform: each token's NLL differs, so the scored set matters
        model = LlamaForCausalLM(config)
        model.save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
        folders[name] = root / name
    return folders


def _evaluate(models: dict[str, Path], records: list[dict], tmp_path: Path, evaluated: list[str] | None = None,
              **options):
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    kw = dict(reference=f"teacher={models['teacher']}", baseline=None, text_field="text", slice_by=[], max_docs=None,
              train_data=None, tasks=[], task_n=1, max_length=256, seed=0)
    suite = build_suite(evaluated or [f"student={models['student']}"], data=str(data), **{**kw, **options})
    suite.throughput_prompts = 0
    return run_suite(suite).sets["held"]


def _nll_by_hand(folder: Path, tokenizer, ids: list[int], scored: list[int]) -> tuple[float, int]:
    """Σ −log p(token t | tokens < t) over the positions `scored`, from one plain forward pass."""
    model = LlamaForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :, :len(tokenizer)]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return float(sum(-logp[t - 1, ids[t]] for t in scored)), len(scored)


def test_prompt_completion_scores_the_completion_tokens_only(models, tiny_tokenizer, tmp_path):
    block = _evaluate(models, PAIRS, tmp_path)
    assert block.format == "prompt_completion"
    total, count = 0.0, 0
    for record in PAIRS:
        prompt = tiny_tokenizer(record["prompt"])["input_ids"]
        answer = tiny_tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
        ids = prompt + answer + [tiny_tokenizer.eos_token_id]  # training learns to stop, so eval scores it too
        nll, n = _nll_by_hand(models["student"], tiny_tokenizer, ids, list(range(len(prompt), len(ids))))
        total, count = total + nll, count + n
    assert block.n_tokens == count
    assert block.metrics["student"]["nll"].mean == pytest.approx(total / count, rel=1e-4)


def test_chat_scores_the_assistant_turns_rendered_with_the_template(models, tiny_tokenizer, tmp_path):
    block = _evaluate(models, CHATS, tmp_path)
    assert block.format == "messages"
    total, count = 0.0, 0
    for record in CHATS:
        text = tiny_tokenizer.apply_chat_template(record["messages"], tokenize=False)
        enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans, cursor = [], 0
        for turn in record["messages"]:  # ChatML: an answer is "<|im_start|>assistant\n" + content + "<|im_end|>\n"
            head = f"<|im_start|>{turn['role']}\n"
            start = text.index(head + turn["content"], cursor) + len(head)
            cursor = start + len(turn["content"]) + len("<|im_end|>\n")
            if turn["role"] == "assistant":
                spans.append((start, cursor))
        scored = [t for t, (begin, _) in enumerate(enc["offset_mapping"])
                  if t > 0 and any(a <= begin < b for a, b in spans)]
        nll, n = _nll_by_hand(models["student"], tiny_tokenizer, enc["input_ids"], scored)
        total, count = total + nll, count + n
    assert block.n_tokens == count
    assert block.metrics["student"]["nll"].mean == pytest.approx(total / count, rel=1e-4)
    everything = _evaluate(models, [{"text": tiny_tokenizer.apply_chat_template(r["messages"], tokenize=False)}
                                    for r in CHATS], tmp_path, fmt="text")
    assert everything.n_tokens > 1.5 * block.n_tokens  # the questions and the markup were left out


def test_a_chat_template_override_renders_the_eval_set(models, tmp_path):
    plain = _evaluate(models, CHATS, tmp_path)
    other = _evaluate(models, CHATS, tmp_path,
                      chat_template="{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                                    "{% if add_generation_prompt %}[assistant] {% endif %}")
    assert other.n_tokens != plain.n_tokens  # the answers end in "\n", not "<|im_end|>\n"


def test_contamination_reads_chat_eval_records_like_training_records(models, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": "x", "completion": m["messages"][1]["content"]}) + "\n"
                             for m in CHATS))
    block = _evaluate(models, CHATS, tmp_path, train_data=str(train))
    assert block.contamination is not None and block.contamination.share > 0.15
    assert block.contamination.docs_with_overlap == len(CHATS)


@pytest.mark.parametrize(("records", "options", "message"), [
    (CHATS, {"max_length": 8}, "no token to score within the first 8 tokens"),
    ([PAIRS[0], {"text": "a plain line"}], {}, "is not a prompt_completion record like the first one"),
    ([{"body": "x"}], {}, "cannot tell the format"),
    (PAIRS, {"fmt": "messages"}, "format 'messages' needs fields ['messages']"),
    (PAIRS, {"fmt": "chat"}, "format 'chat' is not one of"),
])
def test_bad_eval_records_are_one_clear_error(models, tmp_path, records, options, message):
    with pytest.raises(DataError, match="eval set held") as raised:
        _evaluate(models, records, tmp_path, **options)
    assert message in str(raised.value)


def _without_template(model: Path, tokenizer, folder: Path) -> Path:
    """A copy of the model in `model` whose tokenizer has no chat template, as a base model's often has none."""
    LlamaForCausalLM.from_pretrained(model).save_pretrained(folder)
    saved = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = saved
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def test_chat_without_a_template_says_how_to_give_one(models, tiny_tokenizer, tmp_path):
    bare = _without_template(models["student"], tiny_tokenizer, tmp_path / "bare")
    with pytest.raises(DataError, match="--chat-template"):
        _evaluate({"teacher": bare, "student": bare}, CHATS, tmp_path)


@pytest.mark.parametrize(("kd_is_a_run", "baseline"), [(True, "base"), (False, "base"), (True, None)],
                         ids=["run-folder", "model-folder", "run-folder-no-baseline"])
def test_a_chat_set_is_rendered_with_the_students_template_not_the_baselines(models, tiny_tokenizer, tmp_path,
                                                                            kd_is_a_run, baseline):
    """`distill eval base=BASE kd=KD --baseline base`, the base model first and without a chat template: the set is
    rendered with the distilled model's template (a run folder's student, else the first model that is neither the
    reference nor the baseline), not refused for the base model's lack of one. A run folder's student is preferred
    even when the base model is not named the baseline."""
    base = _without_template(models["student"], tiny_tokenizer, tmp_path / "base")
    kd = models["student"]
    if kd_is_a_run:  # a finished training run folder: its recipe and its student/
        kd = tmp_path / "kd-run"
        shutil.copytree(models["student"], kd / "student")
        (kd / "recipe.yaml").write_text("seed: 0\n")
    block = _evaluate(models, CHATS, tmp_path, evaluated=[f"base={base}", f"kd={kd}"], baseline=baseline)
    assert set(block.metrics) == {"teacher", "base", "kd"}
    assert block.n_tokens == sum(encode_messages(r, tiny_tokenizer, "r").n_targets for r in CHATS)


def test_the_length_slice_buckets_a_chat_by_its_whole_length_not_its_answers(models, tiny_tokenizer, tmp_path):
    """A long question with a short answer is a long document: the `length` slice counts every token the model
    reads (after the first), as its label "tokens" says, not only the scored answer tokens."""
    records = [{"messages": [{"role": "user", "content": sentence(i, 60)},
                             {"role": "assistant", "content": sentence(i + 1, 6)}]} for i in range(3)]
    for record in records:
        example = encode_messages(record, tiny_tokenizer, "r")
        assert example.n_targets < 128 <= len(example.input_ids) - 1 < 256  # the two counts fall in two buckets
    block = _evaluate(models, records, tmp_path)
    assert list(block.slices["length"]) == ["128–255 tokens"]
    assert block.slices["length"]["128–255 tokens"].n_docs == 3


def test_a_chat_run_is_evaluated_with_its_own_template_on_chat_and_sharegpt_data(tmp_path, monkeypatch):
    """The example chat run (examples/recipes/data-sharegpt.yaml, a template of its own) evaluated as the README
    says: its held-out chat set is rendered with the student's template, not its teacher's ChatML; ShareGPT records
    are read as chat too; and the run's training data feeds the contamination check."""
    from transformers import AutoTokenizer

    from conftest import REPO
    from distill.recipe import load_recipe
    from distill.training.loop import train

    monkeypatch.chdir(REPO)
    recipe = load_recipe("examples/recipes/data-sharegpt.yaml")
    recipe = recipe.model_copy(update={"training": recipe.training.model_copy(
        update={"output_dir": str(tmp_path / "chat"), "max_steps": 2})})
    run = tmp_path / "chat"
    train(recipe)
    held = REPO / "examples" / "data" / "chat-heldout.jsonl"
    kw = dict(reference=None, baseline=None, text_field="text", slice_by=[], max_docs=None, train_data=None,
              tasks=[], task_n=1, max_length=96, seed=0)
    suite = build_suite([str(run)], data=str(held), **kw)
    suite.throughput_prompts = 0
    block = run_suite(suite).sets["chat-heldout"]
    student = AutoTokenizer.from_pretrained(run / "student")
    assert "<|assistant|>" in student.chat_template
    records = [json.loads(line) for line in held.read_text().splitlines()]
    expected = sum(encode_messages(r, student, "r").n_targets for r in records)
    assert block.format == "messages" and suite.models[0].role == "teacher" and block.n_tokens == expected
    assert block.contamination is not None and block.contamination.train_records == 64
    sharegpt = build_suite([str(run)], data=str(REPO / "examples" / "data" / "sharegpt.jsonl.gz"),
                           **{**kw, "max_docs": 4})
    assert sharegpt.sets[0].format == "messages"
