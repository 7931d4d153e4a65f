"""Packing with attention reset: each packed document attends only to itself — checked against the same document
scored alone — and a document's first token is not a target; without the reset, documents see their predecessors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import base_recipe
from distill.data.batch import Batch
from distill.data.dataset import tokenize_data
from distill.data.example_stream import pack
from distill.data.formatting import IGNORE_INDEX, Example
from distill.losses.lm_head import last_hidden_states
from distill.models import load_tokenizer
from distill.recipe import validate_recipe
from distill.training.loop import train
from distill.training.metrics import read_metrics


def test_pack_with_reset_restarts_positions_and_drops_cross_document_targets():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]  # stream 1 2 3 4 5 6 7 8 9, blocks of 4
    plain = pack(docs, 4)
    assert [e.input_ids for e in plain] == [[1, 2, 3, 4], [5, 6, 7, 8]] and all(e.position_ids is None for e in plain)
    reset = pack(docs, 4, reset_attention=True)
    assert [e.input_ids for e in reset] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert [e.position_ids for e in reset] == [[0, 1, 2, 0], [0, 0, 1, 2]]  # block 2 opens mid-document: its own
    assert [e.labels for e in reset] == [[1, 2, 3, IGNORE_INDEX], [5, IGNORE_INDEX, 7, 8]]


@pytest.fixture(scope="module")
def tiny_model(tiny_teacher_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_teacher_dir, attn_implementation="sdpa").eval()


def _alone(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return last_hidden_states(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]


def test_no_token_attends_across_a_document_boundary(tiny_model, tiny_tokenizer):
    """Each document's hidden states inside a packed, reset block equal those of the document scored alone; without
    the reset the second document's differ (it sees the first). Two rows of different lengths exercise padding."""
    docs = [tiny_tokenizer("once upon a time there was a cat")["input_ids"] + [tiny_tokenizer.eos_token_id],
            tiny_tokenizer("the dog ran to the park and sat")["input_ids"] + [tiny_tokenizer.eos_token_id],
            tiny_tokenizer("a bird sang")["input_ids"]]
    a, b, c = (len(d) for d in docs)
    long_row = pack(docs, a + b + c, reset_attention=True)[0]
    short_row = pack(docs[:2], a + b, reset_attention=True)[0]
    batch = Batch.of([long_row, short_row], tiny_tokenizer.pad_token_id)
    assert batch.model_inputs()["attention_mask"] is None and batch.position_ids is not None
    with torch.no_grad():
        packed = last_hidden_states(tiny_model, **batch.model_inputs())
    for row, spans in ((0, [(0, a), (a, a + b), (a + b, a + b + c)]), (1, [(0, a), (a, a + b)])):
        flat = [t for d in docs for t in d]
        for start, end in spans:
            assert torch.allclose(packed[row, start:end], _alone(tiny_model, flat[start:end]), atol=1e-5), (row, start)
    plain = Batch.of([Example(long_row.input_ids, long_row.labels)], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        crossing = last_hidden_states(tiny_model, **plain.model_inputs())
    assert torch.allclose(crossing[0, :a], _alone(tiny_model, docs[0]), atol=1e-5)
    assert not torch.allclose(crossing[0, a:a + b], _alone(tiny_model, docs[1]), atol=1e-3)


def test_a_recipe_with_reset_attention_trains(tmp_path, text_data, tiny_teacher_dir):
    raw = base_recipe(text_data, tmp_path / "run")
    raw["data"]["reset_attention"] = True
    recipe = validate_recipe(raw)
    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    data = tokenize_data(recipe.data, tokenizer)
    plain = tokenize_data(recipe.data.model_copy(update={"reset_attention": False}), tokenizer)
    assert all(e.position_ids is not None for e in data.examples)
    assert data.n_targets < plain.n_targets  # the documents' first tokens are no longer targets
    train(recipe)
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 4 and all(0 < m["kd"] < 20 for m in metrics)


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("reset", [True, False])
def test_streamed_examples_equal_the_whole_corpus_packed_at_once(tiny_tokenizer, packing, reset):
    """The token store's first build tokenizes and packs a block of records at a time (ExampleStream); whatever
    the block size, it yields exactly the examples of packing every document at once — the carry between blocks
    loses, repeats and re-positions nothing — and the same dropped count."""
    from distill.builtin.corpus import tiny_stories
    from distill.data.example_stream import ExampleStream
    from distill.data.formatting import encode_text
    from distill.data.sources import Records
    from distill.recipe import DataConfig

    texts = [" ".join(tiny_stories(1 + i % 4, seed=i)) for i in range(23)] + ["x"]
    records = Records([{"text": t} for t in texts], path=__import__("pathlib").Path("mem.jsonl"), unit="line")
    cfg = DataConfig(train="mem.jsonl", max_length=37, packing=packing, reset_attention=reset and packing)
    documents = encode_text(records, tiny_tokenizer, "text")
    whole = pack(documents, 37, reset) if packing else [Example(d[:37], d[:37]) for d in documents]
    expected = [e for e in whole if e.n_targets > 0]
    for block in (1, 2, 7, 1000):
        stream = ExampleStream(records, cfg, tiny_tokenizer, block=block)
        assert list(stream) == expected, block
        assert stream.kept == len(expected) and stream.dropped == len(whole) - len(expected)


def test_a_corpus_shorter_than_one_block_streamed_in_pieces_is_one_short_example(tiny_tokenizer):
    """The packer's end: data that never fills a block, arriving over several record blocks, becomes the one short
    example packing it at once gives (not nothing, and not one per record block)."""
    from distill.data.example_stream import ExampleStream
    from distill.data.formatting import encode_text
    from distill.data.sources import Records
    from distill.recipe import DataConfig

    records = Records([{"text": t} for t in ("one tree", "two cats", "red sky")],
                      path=__import__("pathlib").Path("mem.jsonl"), unit="line")
    cfg = DataConfig(train="mem.jsonl", max_length=4096, packing=True)
    (expected,) = pack(encode_text(records, tiny_tokenizer, "text"), 4096)
    stream = ExampleStream(records, cfg, tiny_tokenizer, block=1)
    assert list(stream) == [expected] and len(expected.input_ids) < 4096 and stream.kept == 1
