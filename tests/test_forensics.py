"""The forensics tests' mathematics: the radioactivity detector (selection rules, green counts, exact p-value), the
closed and open modes on a tiny model trained on heavily watermarked text, canary exposure on a toy space, and the
sign-flip permutation test against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from distill.defenses.keys import CanarySpace
from distill.defenses.watermark import GreenList
from distill.forensics import detector, radioactivity
from distill.forensics.canaries import candidate, candidate_index, exposure, response_logliks
from distill.forensics.detector import Stream, binomial_tail, select_pairs
from distill.forensics.fingerprint import sign_flip_test

torch.set_num_threads(1)
KEY = "k" * 32


# ---- the detector ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n", "gamma"), [(1, 1, 0.25), (3, 10, 0.25), (10, 10, 0.5), (40, 100, 0.25),
                                               (700, 1000, 0.5), (5, 200, 0.1)])
def test_the_p_value_is_the_exact_binomial_tail(k, n, gamma):
    assert binomial_tail(k, n, gamma) == pytest.approx(stats.binom.sf(k - 1, n, gamma), rel=1e-9, abs=1e-300)
    log10 = detector.log10_binomial_tail(k, n, gamma)
    assert log10 == pytest.approx(math.log10(stats.binom.sf(k - 1, n, gamma)), rel=1e-6)


def test_no_green_pair_is_p_one_and_a_count_beyond_n_is_refused():
    assert binomial_tail(0, 50, 0.25) == 1.0
    assert detector.log10_binomial_tail(0, 50, 0.25) == 0.0
    with pytest.raises(ValueError):
        binomial_tail(6, 5, 0.25)


def test_green_counts_match_the_green_list_pair_by_pair():
    green = GreenList(KEY, context_width=2, gamma=0.25)
    pairs = [((a, b), t) for a in range(4) for b in range(3) for t in range(20)]
    expected = sum(bool(green.mask(torch.tensor([list(w)]), 20)[0, t]) for w, t in pairs)
    assert detector.count_green(green, pairs) == expected
    assert detector.count_green(green, pairs, chunk=7) == expected  # chunking does not change the count
    assert 0.15 < expected / len(pairs) < 0.35


def test_dedup_counts_each_distinct_pair_once():
    ids = [5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6, 8]  # (5,6),(6,7),(7,5) repeat; (6,8) once
    stream = Stream(radioactivity.own_pairs(ids, 1))
    kept = select_pairs([stream])
    assert kept.pairs == [((5,), 6), ((6,), 7), ((7,), 5), ((6,), 8)]
    assert kept.tokens_seen == 11 and kept.skipped["repeated_pair"] == 7
    again = select_pairs([stream, Stream(radioactivity.own_pairs([5, 6, 9], 1))])  # dedup spans texts
    assert again.pairs[-1] == ((6,), 9) and len(again.pairs) == 5
    raw = select_pairs([stream], dedup=False)
    assert len(raw.pairs) == 11 and raw.skipped["repeated_pair"] == 0


def test_prompt_windows_first_windows_and_the_filter():
    stream = Stream([((1,), 2), ((3,), 4), ((3,), 5), ((6,), 7)], excluded={(1,)}, first_window_only=True)
    kept = select_pairs([stream], window_filter={(3,), (1,)})
    assert kept.pairs == [((3,), 4)]
    assert kept.skipped == {"prompt_window": 1, "repeated_window": 1, "filtered": 1, "repeated_pair": 0}
    # without dedup the second (3,) is scored again; the prompt window stays excluded
    assert select_pairs([stream], dedup=False).pairs == [((3,), 4), ((3,), 5), ((6,), 7)]


def test_score_on_hand_built_text():
    green = GreenList(KEY, context_width=1, gamma=0.25)
    ids = list(range(40)) * 3  # 39 distinct pairs... and (39, 0) twice
    result = detector.score(green, [Stream(radioactivity.own_pairs(ids, 1))])
    distinct = sorted(set(radioactivity.own_pairs(ids, 1)))
    k = int(sum(green.is_green(torch.tensor([list(w) for w, _ in distinct]), torch.tensor([t for _, t in distinct]))))
    assert result.scored == len(distinct) == 40 and result.green == k
    assert result.p_value == pytest.approx(stats.binom.sf(k - 1, 40, 0.25) if k else 1.0)


def test_window_filter_keeps_the_most_frequent_windows():
    docs = [[1, 2, 1, 2, 1, 3], [1, 2, 9]]
    assert detector.window_filter(docs, 2, top=1) == {(1, 2)}
    assert detector.window_filter(docs, 1, top=2) == {(1,), (2,)}


# ---- closed and open mode on a tiny model ------------------------------------------------------------------------
LOW, WIDTH = 3, 48  # watermarked text uses token ids LOW .. LOW + WIDTH − 1 only (no special tokens)


def watermarked_ids(green: GreenList, n_docs: int, length: int, seed: int) -> list[list[int]]:
    """Text watermarked with δ = ∞: every next token drawn uniformly from the green list of its window."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n_docs):
        ids = [LOW + int(torch.randint(WIDTH, (1,), generator=gen))]
        while len(ids) < length:
            mask = green.mask(torch.tensor([ids[-1:]]), LOW + WIDTH)[0, LOW:]
            choices = torch.nonzero(mask).flatten() + LOW
            ids.append(int(choices[torch.randint(len(choices), (1,), generator=gen)]))
        docs.append(ids)
    return docs


@pytest.fixture(scope="module")
def setting():
    from transformers import LlamaForCausalLM

    from distill.builtin.corpus import tiny_stories
    from distill.builtin.tiny_models import tiny_llama_config
    from distill.builtin.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(tiny_stories(50, seed=0), vocab_size=300)
    green = GreenList(KEY, context_width=1, gamma=0.25)
    train = torch.tensor(watermarked_ids(green, 96, 48, seed=1))
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1)
    untrained = LlamaForCausalLM(config).eval()
    trained = LlamaForCausalLM(config)
    trained.load_state_dict(untrained.state_dict())
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):
        batch = train[torch.randint(len(train), (16,), generator=gen)]
        trained(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return tokenizer, green, untrained, trained.eval()


def closed_p(model, tokenizer, green) -> float:
    from distill.generation.engine import Engine

    gen = torch.Generator().manual_seed(7)
    prompts = [[LOW + int(t) for t in torch.randint(WIDTH, (4,), generator=gen)] for _ in range(12)]
    streams, _ = radioactivity.closed_streams(Engine(model, tokenizer, max_batch_size=12), prompts, green,
                                              max_new_tokens=24, temperature=1.0, top_p=1.0)
    assert [s.excluded for s in streams] == [{(t,) for t in p} for p in prompts]  # the prompts' windows
    result = detector.score(green, streams)
    assert result.scored > 30
    return result.p_value


def open_p(model, tokenizer, green) -> float:
    docs = watermarked_ids(green, 16, 40, seed=99)  # held out: not what the model trained on
    preds = radioactivity.top1_predictions(model, docs, n_tokens=len(tokenizer))
    result = detector.score(green, radioactivity.open_streams(docs, preds, 1))
    assert result.scored > 30
    return result.p_value


def test_closed_mode_detects_the_model_trained_on_watermarked_text(setting):
    tokenizer, green, untrained, trained = setting
    assert closed_p(trained, tokenizer, green) < 0.01
    assert closed_p(untrained, tokenizer, green) > 0.01


def test_open_mode_detects_the_model_trained_on_watermarked_text(setting):
    tokenizer, green, untrained, trained = setting
    assert open_p(trained, tokenizer, green) < 0.01
    assert open_p(untrained, tokenizer, green) > 0.01


def test_open_mode_pairs_the_teachers_window_with_the_suspects_prediction():
    docs = [[10, 11, 12, 10, 13]]
    preds = [[20, 21, 22, 23]]  # preds[t − 1] predicts docs[t]
    (stream,) = radioactivity.open_streams(docs, preds, 2)
    assert stream.pairs == [((10, 11), 21), ((11, 12), 22), ((12, 10), 23)]
    assert stream.first_window_only


# ---- canary exposure ---------------------------------------------------------------------------------------------
def test_exposure_ranks_the_secret_exactly_on_a_toy_space():
    space = CanarySpace(alphabet="01", length=3, template="code {}")
    table = {"000": -5.0, "001": -1.0, "010": -4.0, "011": -2.0, "100": -6.0, "101": -3.0, "110": -7.0, "111": -8.0}

    def score(responses):
        return [table[r.removeprefix("code ")] for r in responses]

    found = exposure(space, "101", score, max_candidates=8)  # "001" (−1) and "011" (−2) score higher: rank 3
    assert (found.method, found.rank, found.above, found.candidates_scored) == ("exact", 3.0, 2, 8)
    assert found.exposure == pytest.approx(3 - math.log2(3))
    assert found.p_value == pytest.approx(3 / 8)
    best = exposure(space, "001", score, max_candidates=8)
    assert best.rank == 1 and best.exposure == pytest.approx(3.0) and best.p_value == pytest.approx(1 / 8)


def test_exposure_estimated_from_a_sample_when_the_space_is_large():
    space = CanarySpace(alphabet="0123456789", length=4, template="{}")

    def score(responses):
        return [-float(r) for r in responses]  # smaller numbers score higher

    found = exposure(space, "0999", score, max_candidates=4000, seed=1)  # true rank 1000 of 10,000
    assert found.method == "sampled" and found.candidates_scored == 4001
    assert found.rank == pytest.approx(1000, rel=0.1)
    assert found.exposure == pytest.approx(math.log2(10_000 / 1000), abs=0.15)
    assert found.p_value == pytest.approx(0.1, abs=0.02)
    assert exposure(space, "0999", score, max_candidates=4000, seed=1) == found  # seeded


def test_candidates_enumerate_the_space_in_order():
    space = CanarySpace(alphabet="ab", length=2, template="{}")
    assert [candidate(space, i) for i in range(4)] == ["aa", "ab", "ba", "bb"]
    assert all(candidate_index(space, candidate(space, i)) == i for i in range(4))


def test_response_loglikelihoods_match_a_forward_pass_per_response(setting):
    tokenizer, _, model, _ = setting
    prompt = tokenizer("hello there")["input_ids"]
    responses = ["code 101", "code 1", "a much longer response than the others"]
    batched = response_logliks(model, tokenizer, prompt, responses, n_tokens=len(tokenizer), batch_size=3)
    for response, value in zip(responses, batched, strict=True):
        ids = prompt + tokenizer(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1, :len(tokenizer)], -1)
        own = sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt), len(ids)))
        assert value == pytest.approx(own, abs=1e-4)


# ---- the permutation test ----------------------------------------------------------------------------------------
def brute_force(d: np.ndarray) -> float:
    observed = d.mean()
    means = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean([m >= observed - 1e-12 for m in means]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_exact_equals_brute_force(seed):
    d = np.random.default_rng(seed).normal(0.3, 1.0, size=9)
    test = sign_flip_test(d, n_permutations=1 << 9)
    assert test.method == "exact" and test.n_permutations == 512
    assert test.p_value == pytest.approx(brute_force(d))


def test_sign_flip_monte_carlo_is_close_to_brute_force_and_seeded():
    d = np.random.default_rng(5).normal(0.2, 1.0, size=12)
    exact = brute_force(d)
    test = sign_flip_test(d, n_permutations=3000, seed=3)
    assert test.method == "monte_carlo"
    assert abs(test.p_value - exact) < 4 * math.sqrt(exact * (1 - exact) / 3000) + 1e-3
    hits = test.p_value * 3001 - 1  # (1 + #≥) / (1 + B): the observed statistic counts as one permutation
    assert hits == pytest.approx(round(hits), abs=1e-9) and hits >= 0
    assert sign_flip_test(d, n_permutations=3000, seed=3) == test


def test_sign_flip_counts_ties_against_the_suspect():
    assert sign_flip_test([0.0, 0.0, 0.0], n_permutations=100).p_value == 1.0
    assert sign_flip_test([1.0, 1.0, 1.0], n_permutations=100).p_value == pytest.approx(1 / 8)
