"""The cache's pieces on their own: the record codec, the shard journal, and naming setup differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.losses.signals import SampledSignal, TopKSignal, draw, importance_weights
from distill.teachers.cache import codec, sampled_codec
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


def random_sampled(n: int, draws: int, vocab: int, t: float, seed: int = 0) -> sampled_codec.SampledRecord:
    g = torch.Generator().manual_seed(seed)
    log_p = torch.log_softmax(torch.randn(n, vocab, generator=g) * 3.0, -1)
    ids, counts, logprobs, log_z = draw(log_p, draws, t, g)
    return sampled_codec.SampledRecord(ids.numpy(), logprobs.numpy(), counts.numpy(),
                                       None if log_z is None else log_z.numpy())


def as_dict(record: sampled_codec.SampledRecord, row: int) -> dict[int, tuple[int, float]]:
    live = record.counts[row] > 0
    return {int(i): (int(c), float(lp)) for i, c, lp in zip(record.ids[row][live], record.counts[row][live],
                                                            record.logprobs[row][live], strict=True)}


@pytest.mark.parametrize("encoding", ["q8", "exact"])
@pytest.mark.parametrize(("vocab", "t"), [(300, 1.0), (49_152, 1.0), (262_144, 1.7)])
def test_sampled_round_trip_keeps_ids_and_counts_exactly(vocab, t, encoding):
    """Ids and counts (the weights at t = 1) come back exactly; log-probabilities within the quantiser's step (q8)
    or bit-exact (exact); the proposal's log-normaliser to float16 (q8) or exactly."""
    record = random_sampled(37, 24, vocab, t)
    rank, order = vocabulary_order(vocab)
    data = sampled_codec.encode(record, rank, encoding)
    decoded = sampled_codec.decode(data, order)
    assert decoded.ids.shape[1] == record.ids.shape[1]
    for row in range(len(record)):
        a, b = as_dict(record, row), as_dict(decoded, row)
        assert a.keys() == b.keys() and all(a[i][0] == b[i][0] for i in a)
        if encoding == "exact":
            assert all(a[i][1] == b[i][1] for i in a)
        else:
            top = max(v[1] for v in a.values())
            for i in a:
                step = codec.FINE_STEP if top - a[i][1] < codec.FINE_RANGE else codec.COARSE_STEP
                assert abs(a[i][1] - b[i][1]) <= step / 2 + 2e-3 or top - a[i][1] > codec.MAX_DISTANCE
    if t == 1.0:
        assert decoded.log_z is None
    else:
        assert np.allclose(decoded.log_z, record.log_z, rtol=0 if encoding == "exact" else 1e-3)
    with pytest.raises(codec.CorruptRecord, match="where a top-k record was expected"):
        codec.decode(data, order)
    with pytest.raises(codec.CorruptRecord, match="where a sampled record was expected"):
        sampled_codec.decode(codec.encode(random_signal(5, 8, vocab), rank, encoding), order)


@pytest.mark.parametrize("vocab", [300, 49_152])
def test_counts_encoding_keeps_ids_and_counts_exactly_and_puts_minus_entropy_in_log_ps_place(vocab):
    """The `counts` encoding: ids and counts exact (the gradient at t = 1 reads nothing else), the entropy to
    float16, −H(p) as every live entry's log p (the value's expectation), nothing on padding; smaller than q8; a
    record of a flatter proposal, or without its entropy, is refused."""
    record = random_sampled(37, 64, vocab, 1.0)
    g = torch.Generator().manual_seed(0)
    log_p = torch.log_softmax(torch.randn(37, vocab, generator=g) * 3.0, -1)  # random_sampled's teacher
    record.entropy = (-(log_p.exp() * log_p).sum(-1)).numpy()
    rank, order = vocabulary_order(vocab)
    data = sampled_codec.encode(record, rank, "counts")
    decoded = sampled_codec.decode(data, order)
    for row in range(len(record)):
        a, b = as_dict(record, row), as_dict(decoded, row)
        assert a.keys() == b.keys() and all(a[i][0] == b[i][0] for i in a)
        assert all(b[i][1] == -decoded.entropy[row] for i in b)
    assert np.allclose(decoded.entropy, record.entropy, rtol=1e-3) and decoded.log_z is None
    assert np.all(decoded.logprobs[decoded.counts == 0] == 0)
    assert len(data) < len(sampled_codec.encode(record, rank, "q8"))
    with pytest.raises(ValueError, match="has no entropy"):
        sampled_codec.encode(random_sampled(5, 8, vocab, 1.0), rank, "counts")
    flatter = random_sampled(5, 8, vocab, 2.0)
    flatter.entropy = np.ones(5, dtype=np.float32)
    with pytest.raises(ValueError, match="a flatter proposal"):
        sampled_codec.encode(flatter, rank, "counts")
    with pytest.raises(codec.CorruptRecord, match="where a top-k record was expected"):
        codec.decode(data, order)


def test_sampled_weights_from_a_decoded_record_match_the_signal_drawn_in_memory():
    """What the cache serves (decode → importance weights) is what `SampledSignal.from_logits` would have drawn."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(9, 500, generator=g) * 2
    signal = SampledSignal.from_logits(logits, 16, 1.0, 1.5, generator=torch.Generator().manual_seed(3))
    ids, counts, logprobs, log_z = draw(torch.log_softmax(logits, -1), 16, 1.5, torch.Generator().manual_seed(3))
    rank, order = vocabulary_order(500)
    record = sampled_codec.SampledRecord(ids.numpy(), logprobs.numpy(), counts.numpy(), log_z.numpy())
    decoded = sampled_codec.decode(sampled_codec.encode(record, rank, "exact"), order)
    weights = importance_weights(torch.from_numpy(decoded.counts), torch.from_numpy(decoded.logprobs),
                                 torch.from_numpy(decoded.log_z), 16, 1.5)
    dense = torch.zeros(9, 500)
    dense_decoded = torch.zeros(9, 500)
    dense.scatter_add_(-1, signal.ids, signal.weights)
    dense_decoded.scatter_add_(-1, torch.from_numpy(decoded.ids), weights)
    assert torch.allclose(dense, dense_decoded, atol=1e-6)


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
             "k": 64, "capture_temperature": 1.0, "scheme": {"name": "topk"}}
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
    ({"scheme": {"name": "sampled", "draws": 32, "proposal_temperature": 1.0}, "k": None},
     "teacher.cache_scheme: 'topk' in the cache, 'sampled'"),
])
def test_every_setup_difference_is_named(change, named):
    assert setup_differences(_setup(), _setup()) == []
    problems = setup_differences(_setup(), _setup(**change))
    assert len(problems) == 1 and named in problems[0]


@pytest.mark.parametrize(("change", "named"), [
    ({"draws": 16}, "teacher.sample_draws: 32 in the cache, 16"),
    ({"proposal_temperature": 2.0}, "teacher.proposal_temperature: 1.0 in the cache, 2.0"),
    ({"name": "topk"}, "teacher.cache_scheme: 'sampled' in the cache, 'topk'"),
])
def test_a_sampled_scheme_mismatch_is_named(change, named):
    sampled = {"name": "sampled", "draws": 32, "proposal_temperature": 1.0, "seed": 0}
    cached = _setup(scheme=sampled, k=None)
    wanted = {"name": "sampled", "draws": 32, "proposal_temperature": 1.0}
    assert setup_differences(cached, _setup(scheme=wanted, k=None)) == []  # the seed is provenance, not a setting
    assert setup_differences(cached, _setup(scheme=wanted, k=7)) == []  # top_k means nothing to a sampled cache
    problems = setup_differences(cached, _setup(scheme={**wanted, **change}, k=None))
    assert len(problems) == 1 and named in problems[0]


def test_a_cache_from_before_schemes_were_recorded_is_a_top_k_cache():
    before = _setup()
    del before["scheme"]
    assert setup_differences(before, _setup()) == []
    problems = setup_differences(before, _setup(scheme={"name": "sampled", "draws": 8, "proposal_temperature": 1}))
    assert problems and "cache_scheme" in problems[0]


def test_a_moved_data_file_with_the_same_sequences_is_accepted():
    moved = _setup(data={"config": {"train": "elsewhere/d.jsonl", "max_length": 64}})
    assert setup_differences(_setup(), moved) == []
