"""Labels, masks and the shift: the loss predicts exactly the completion / assistant tokens, each from the position
before it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from distill.data.batch import Batch, collate, shifted_targets
from distill.data.dataset import BatchPlan
from distill.data.example_stream import pack
from distill.data.formatting import IGNORE_INDEX, encode_messages, encode_prompt_completion, encode_text
from distill.errors import DataError
from distill.objectives.offpolicy import OffPolicyObjective
from distill.recipe import ObjectiveConfig


def test_prompt_completion_labels_only_the_completion(tiny_tokenizer):
    ex = encode_prompt_completion({"prompt": "anna had two apples", "completion": " and got one more."},
                                  tiny_tokenizer, "record 1")
    n_prompt = len(tiny_tokenizer("anna had two apples")["input_ids"])
    assert ex.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ex.input_ids[n_prompt:-1]) == " and got one more."
    assert ex.n_targets == len(ex.input_ids) - n_prompt


def test_shift_pairs_each_position_with_the_next_token():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, IGNORE_INDEX]])
    targets, mask = shifted_targets(labels)
    # logits at positions 1, 2, 3 predict tokens 7, 8, 9 (at positions 2, 3, 4)
    assert mask.tolist() == [[False, True, True, True, False]]
    assert targets[mask].tolist() == [7, 8, 9]


def test_cross_entropy_is_on_completion_tokens_predicted_from_the_previous_position(tiny_teacher_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    examples = [
        encode_prompt_completion({"prompt": "the cat likes", "completion": " ben because ben is kind."},
                                 tiny_tokenizer, "record 1"),
        encode_prompt_completion({"prompt": "yesterday emma saw", "completion": " a dog."}, tiny_tokenizer, "record 2"),
    ]
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        objective = OffPolicyObjective(model, ObjectiveConfig(alpha=1.0), len(tiny_tokenizer), with_teacher=False)
        sums = objective(Batch(**batch)).as_dict()
        # by hand: for every labelled position t ≥ 1, −log p(token_t | tokens_<t), from a separate unpadded forward,
        # normalised over the tokenizer's real tokens (the model's padded vocabulary rows are not tokens)
        expected, count = 0.0, 0
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, :, : len(tiny_tokenizer)]
            logp = torch.log_softmax(logits.float(), -1)
            for t in range(1, len(ex.input_ids)):
                if ex.labels[t] != IGNORE_INDEX:
                    expected -= logp[t - 1, ex.input_ids[t]].item()
                    count += 1
    assert sums['n_targets'] == count == sum(ex.n_targets for ex in examples)
    assert sums['ce'].item() == pytest.approx(expected, rel=1e-5)


def test_chat_labels_cover_assistant_turns_only(tiny_tokenizer):
    record = {"messages": [
        {"role": "system", "content": "be brief."},
        {"role": "user", "content": "what does anna have?"},
        {"role": "assistant", "content": "two apples."},
        {"role": "user", "content": "and ben?"},
        {"role": "assistant", "content": "a dog."},
    ]}
    ex = encode_messages(record, tiny_tokenizer, "record 1")
    rendered = tiny_tokenizer.apply_chat_template(record["messages"], tokenize=False)
    assert tiny_tokenizer.decode(ex.input_ids) == rendered
    labelled = [tok for tok, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(labelled) == "two apples.<|im_end|>\na dog.<|im_end|>\n"
    # the assistant headers (prompt side) are not labelled
    assert "assistant" not in tiny_tokenizer.decode(labelled)


def test_text_parts_render_as_their_joined_text(tiny_tokenizer):
    """OpenAI-style content parts that are all text are the same conversation as the joined string."""
    as_parts = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "what does "}, {"type": "text", "text": "anna have?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "two apples."}]},
    ]}
    as_text = {"messages": [{"role": "user", "content": "what does anna have?"},
                            {"role": "assistant", "content": "two apples."}]}
    assert encode_messages(as_parts, tiny_tokenizer, "record 1") == encode_messages(as_text, tiny_tokenizer, "r")
    assert as_parts["messages"][0]["content"][0] == {"type": "text", "text": "what does "}  # the record is untouched


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (7, r"messages\[1\]\.content is int \(7\); it must be a string"),
        (None, r"messages\[1\]\.content is null; it must be a string"),
        ([{"type": "image_url", "image_url": {"url": "x.png"}}], r"messages\[1\]\.content\[0\] is a 'image_url' part"),
        (["just a string"], r"messages\[1\]\.content\[0\] is not a \{type, text\} part"),
        ([{"type": "text", "text": 3}], r"messages\[1\]\.content\[0\] is not a \{type, text\} part"),
    ],
    ids=["int", "none", "image-part", "bare-string-part", "non-string-text"],
)
def test_unusable_content_names_the_record_and_turn(tiny_tokenizer, content, expected):
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]}
    with pytest.raises(DataError, match=r"^data\.train: d\.jsonl, line 4: " + expected):
        encode_messages(record, tiny_tokenizer, "d.jsonl, line 4")


def test_a_failing_chat_template_names_the_record(tiny_tokenizer):
    """Templates raise on conversations they refuse (alternation, roles); that is the data's problem, said so."""
    import copy

    strict = copy.deepcopy(tiny_tokenizer)
    strict.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    with pytest.raises(DataError, match=r"^data\.train: d\.jsonl, line 9: the chat template .*roles must alternate"):
        encode_messages(record, strict, "d.jsonl, line 9")


def test_packing_cuts_equal_blocks_with_eos_between_documents(tiny_tokenizer):
    docs = encode_text([{"text": "anna sees the cat."}, {"text": "ben feeds a dog."}] * 5, tiny_tokenizer, "text")
    assert all(doc[-1] == tiny_tokenizer.eos_token_id for doc in docs)
    blocks = pack(docs, 8)
    stream = [tok for doc in docs for tok in doc]
    assert all(len(b.input_ids) == 8 and b.labels == b.input_ids for b in blocks)
    assert [tok for b in blocks for tok in b.input_ids] == stream[: len(blocks) * 8]


def test_batch_plan_is_the_same_for_any_number_of_processes():
    one = BatchPlan(n_examples=37, batch_size=8, micro_batch_size=2, world_size=1, seed=5)
    two = BatchPlan(n_examples=37, batch_size=8, micro_batch_size=2, world_size=2, seed=5)
    assert one.accumulation == 4 and two.accumulation == 2
    for step in range(12):  # crosses epoch boundaries
        global_one = sorted(i for micro in one.micro_indices(step, 0) for i in micro)
        global_two = sorted(i for rank in (0, 1) for micro in two.micro_indices(step, rank) for i in micro)
        assert global_one == global_two == sorted(one.step_indices(step))
    seen = [i for step in range(37 * 8 // 8) for i in one.step_indices(step)][:37]
    assert sorted(seen) == list(range(37))  # the first epoch visits every example once
