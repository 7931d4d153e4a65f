"""teachers/: the live model and the cache behind one `signal(batch)`; the objective gives the same loss from
either form a live teacher takes, and the cache source refuses batches it cannot serve."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from distill.builtin.corpus import tiny_stories
from distill.data.batch import Batch
from distill.data.example_stream import pack
from distill.data.formatting import encode_text
from distill.errors import CacheError
from distill.losses.signals import TeacherHidden, TopKSignal, signal_sums
from distill.teachers.cache.source import CachedTeacher
from distill.teachers.source import LiveTeacher


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    docs = encode_text([{"text": t} for t in tiny_stories(12, seed=4)], tiny_tokenizer, "text")
    examples = pack(docs, 20)[:3]
    examples[1].labels[:5] = [-100] * 5  # some positions are not targets
    return Batch.of(examples, tiny_tokenizer.pad_token_id, [0, 1, 2])


def test_the_live_teachers_two_forms_are_the_same_distribution(teacher, batch, tiny_tokenizer):
    vocab = len(tiny_tokenizer)
    hidden = LiveTeacher(teacher, vocab, "hidden").signal(batch)
    logits = LiveTeacher(teacher, vocab, "logits").signal(batch)
    assert isinstance(hidden, TeacherHidden)
    assert hidden.hidden.shape[0] == logits.shape[0] == batch.n_targets()
    assert logits.shape[1] == vocab
    assert torch.allclose(hidden.head.logits(hidden.hidden)[:, :vocab], logits, atol=1e-4)
    # rows in [:, :-1][valid] order: row 0 is the prediction made at position 0 of sequence 0
    full = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(logits[0], full[0, 0, :vocab], atol=1e-5)
    assert signal_sums(logits) == {} and signal_sums(hidden) == {}


class _FakeCache:
    root = "fake"

    def __init__(self, rows: int):
        self.rows = rows

    def signal(self, examples, estimator="counts"):
        logits = torch.randn(self.rows, 11, generator=torch.Generator().manual_seed(0))
        return TopKSignal.from_logits(logits, 4)


def test_the_cache_source_serves_its_examples_and_refuses_what_it_cannot(batch):
    source = CachedTeacher(_FakeCache(batch.n_targets()), "cpu")
    signal = source.signal(batch)
    assert signal.k == 4 and signal.ids.shape[0] == batch.n_targets()
    assert set(signal_sums(signal)) == {"teacher_mass"}
    with pytest.raises(CacheError, match="holds 5 positions for this batch"):
        CachedTeacher(_FakeCache(5), "cpu").signal(batch)
    made_at_run_time = Batch(batch.input_ids, batch.attention_mask, batch.labels, examples=None)
    with pytest.raises(CacheError, match="only batches of the data set"):
        source.signal(made_at_run_time)
