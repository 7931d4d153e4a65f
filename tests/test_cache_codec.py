"""The cache's pieces on their own: the record codec, the shard journal, and naming setup differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.losses.signals import TopKSignal
from distill.teachers.cache import codec
from distill.teachers.cache.fingerprint import setup_differences
from distill.teachers.cache.shard import INDEX_DTYPE, ShardWriter


def random_signal(n: int, k: int, vocab: int, seed: int = 0, sharpness: float = 3.0) -> codec.Signal:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * sharpness
    s = TopKSignal.from_logits(logits, k)
    return codec.Signal(s.ids.numpy(), s.logprobs.numpy(), s.tail().numpy())


def vocabulary_order(vocab: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(1).permutation(vocab)  # any permutation must round-trip, not just the identity
    return codec.inverse_permutation(order), order


def by_id(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ids, axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(values, order, 1)


@pytest.mark.parametrize("vocab", [300, 49_152, 262_144])  # 1, 2 and 3 bytes per id plane
def test_q8_round_trip_keeps_ids_exactly_and_values_within_the_quantiser_step(vocab):
    signal = random_signal(40, 64, vocab)
    rank, order = vocabulary_order(vocab)
    decoded = codec.decode(codec.encode(signal, rank, "q8"), order)

    ids_a, lp_a = by_id(signal.ids, signal.logprobs)
    ids_b, lp_b = by_id(decoded.ids, decoded.logprobs)
    assert np.array_equal(ids_a, ids_b)
    distance = signal.logprobs.max(1, keepdims=True) - lp_a
    bound = np.where(distance < codec.FINE_RANGE, codec.FINE_STEP / 2, codec.COARSE_STEP / 2) + 1e-3  # + fp16 top
    inside = distance < codec.MAX_DISTANCE
    assert (np.abs(lp_a - lp_b) <= bound)[inside].all()
    assert np.allclose(decoded.tail, signal.tail, atol=2e-3, rtol=2e-3)
    assert (np.diff(decoded.logprobs, axis=1) <= 0).all(), "decoded entries come back in descending order"


def test_exact_encoding_is_bit_exact():
    signal = random_signal(17, 32, 1000, seed=3)
    rank, order = vocabulary_order(1000)
    decoded = codec.decode(codec.encode(signal, rank, "exact"), order)
    assert np.array_equal(decoded.ids, signal.ids)
    assert np.array_equal(decoded.logprobs, signal.logprobs)
    assert np.array_equal(decoded.tail, signal.tail)


def test_quantiser_is_monotone_and_clamps_far_entries():
    d = np.linspace(0, 30, 10_001, dtype=np.float32)
    codes = codec.quantize(d)
    assert (np.diff(codes.astype(int)) >= 0).all()
    back = codec.dequantize(codes)
    near = d < codec.FINE_RANGE
    assert np.abs(back - d)[near].max() <= codec.FINE_STEP / 2 + 1e-6
    assert np.abs(back - d)[~near & (d < codec.MAX_DISTANCE)].max() <= codec.COARSE_STEP / 2 + 1e-6
    assert back[-1] == pytest.approx(codec.MAX_DISTANCE)


def test_a_flipped_byte_or_a_cut_record_does_not_decode():
    signal = random_signal(10, 16, 500)
    rank, order = vocabulary_order(500)
    record = bytearray(codec.encode(signal, rank, "q8"))
    record[len(record) // 2] ^= 0x40
    with pytest.raises(codec.CorruptRecord):
        codec.decode(bytes(record), order)
    with pytest.raises(codec.CorruptRecord):
        codec.decode(codec.encode(signal, rank, "q8")[:-7], order)


def test_shard_journal_recovers_from_a_torn_row_and_orphan_bytes(tmp_path):
    writer = ShardWriter(tmp_path, 0)
    for example in range(3):
        writer.append(example, tokens=5, mass=4.5, record=bytes([example]) * (10 + example))
    writer.close()
    # a kill between writing a record and its row, and one in the middle of writing a row
    with open(writer.data_path, "ab") as f:
        f.write(b"x" * 13)
    with open(writer.index_path, "ab") as f:
        f.write(b"\0" * (INDEX_DTYPE.itemsize // 2))

    again = ShardWriter(tmp_path, 0)
    assert again.done == {0, 1, 2}
    assert writer.data_path.stat().st_size == 10 + 11 + 12
    again.append(3, tokens=5, mass=4.0, record=b"abc")
    seal = again.seal([0, 1, 2, 3])
    assert seal["examples"] == 4 and seal["tokens"] == 20 and seal["captured_mass_sum"] == pytest.approx(17.5)
    assert seal["bytes"] == 10 + 11 + 12 + 3


def _setup(**changes):
    setup = {"tokenizer": {"sha256": "a" * 64, "vocab_size": 512, "chat_template": None},
             "data": {"sha256": "b" * 64, "config": {"train": "d.jsonl", "max_length": 64}},
             "teacher": {"source": "t", "dtype": "float32", "config_sha256": "c", "weights_sha256": "d" * 64},
             "k": 64, "capture_temperature": 1.0}
    for key, value in changes.items():
        setup[key] = {**setup[key], **value} if isinstance(value, dict) else value
    return setup


@pytest.mark.parametrize(("change", "named"), [
    ({"tokenizer": {"sha256": "e" * 64}}, "tokenizer: a different tokenizer"),
    ({"tokenizer": {"chat_template": "{{ x }}"}}, "chat template"),
    ({"tokenizer": {"vocab_size": 600}}, "600 in the recipe"),
    ({"data": {"sha256": "f" * 64, "config": {"train": "d.jsonl", "max_length": 32}}}, "data.max_length 64"),
    ({"data": {"sha256": "f" * 64}}, "the tokenized sequences differ"),
    ({"teacher": {"weights_sha256": "0" * 64}}, "teacher: a different model"),
    ({"capture_temperature": 2.0}, "teacher.capture_temperature: 1.0 in the cache, 2.0"),
    ({"k": 8}, "teacher.top_k: 64 in the cache, 8"),
])
def test_every_setup_difference_is_named(change, named):
    assert setup_differences(_setup(), _setup()) == []
    problems = setup_differences(_setup(), _setup(**change))
    assert len(problems) == 1 and named in problems[0]


def test_a_moved_data_file_with_the_same_sequences_is_accepted():
    moved = _setup(data={"config": {"train": "elsewhere/d.jsonl", "max_length": 64}})
    assert setup_differences(_setup(), moved) == []
