"""The distillation game's thieves (distill.attacks): the adaptive student's trace values against autograd, their
sign, the weights and the resampling each thief trains on."""

from __future__ import annotations

import collections

import pytest
import torch

from distill.attacks.students import adaptive_weights, resample, thief_rows
from distill.attacks.value import completion_nll, mean_gradient, shifted, trace_values
from distill.data.formatting import encode_prompt_completion


@pytest.fixture(scope="module")
def model_and_examples(tiny_teacher_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir, dtype=torch.float64)
    texts = [("To be, or not", " to be: that is the question"), ("The quality of mercy", " is not strained"),
             ("All the world's", " a stage, and all the men"), ("Now is the winter", " of our discontent"),
             ("Friends, Romans,", " countrymen, lend me your ears")]
    examples = [encode_prompt_completion({"prompt": p, "completion": c}, tiny_tokenizer, f"row {i}")
                for i, (p, c) in enumerate(texts)]
    return model, examples, tiny_tokenizer.eos_token_id


def test_trace_values_equal_the_autograd_inner_product_with_the_heldout_gradient(model_and_examples):
    model, examples, pad = model_and_examples
    heldout, traces = examples[:2], examples[2:]
    g = mean_gradient(model, heldout, pad, batch_size=2)
    by_hand = mean_gradient(model, heldout[:1], pad)  # one example at a time, summed: the same mean
    for name, value in mean_gradient(model, heldout[1:], pad).items():
        by_hand[name] = (by_hand[name] + value) / 2
    assert all(torch.allclose(g[n], by_hand[n], atol=1e-10) for n in g)
    values = trace_values(model, traces, g, pad, eps=1e-4)
    for i, example in enumerate(traces):
        grad_i = mean_gradient(model, [example], pad)
        exact = sum((grad_i[n].double() * g[n].double()).sum() for n in g).item()
        assert values[i] == pytest.approx(exact, rel=1e-3, abs=1e-6)


def test_a_trace_equal_to_the_heldout_data_has_positive_value_and_descends_the_heldout_loss(model_and_examples):
    model, examples, pad = model_and_examples
    heldout = examples[:1]
    g = mean_gradient(model, heldout, pad)
    (value,) = trace_values(model, heldout, g, pad, eps=1e-4)
    assert value > 0  # ⟨∇NLL, ∇NLL⟩ = ‖g‖² > 0: training on the held-out trace itself helps
    assert value == pytest.approx(sum((t.double() ** 2).sum() for t in g.values()).item(), rel=1e-3)
    before = completion_nll(model, heldout, pad).item()
    with shifted(model, g, -1e-2 / value ** 0.5), torch.no_grad():  # a small SGD step along −∇NLL of that trace
        after = completion_nll(model, heldout, pad).item()
    assert after < before


def test_shifted_restores_the_weights_bitwise(model_and_examples):
    model, examples, pad = model_and_examples
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = mean_gradient(model, examples[:1], pad)
    with shifted(model, g, 0.37):
        assert not torch.equal(next(model.parameters()), before[next(iter(before))])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_adaptive_weights_favour_high_values_have_mean_one_and_flip_with_the_sign():
    values = [3.0, -1.0, 0.5, 10.0]
    w = adaptive_weights(values, beta=1.0)
    assert sum(w) / len(w) == pytest.approx(1.0)
    assert sorted(range(4), key=w.__getitem__) == sorted(range(4), key=values.__getitem__)
    literal = adaptive_weights(values, beta=1.0, sign=-1)
    assert sorted(range(4), key=literal.__getitem__) == sorted(range(4), key=lambda i: -values[i])
    assert adaptive_weights([2.0, 2.0, 2.0]) == [1.0, 1.0, 1.0]
    assert adaptive_weights(values, beta=0.0) == pytest.approx([1.0] * 4)


def test_resampling_is_seeded_and_proportional_to_the_weights():
    rows = [{"id": i} for i in range(3)]
    draw = resample(rows, [1.0, 2.0, 7.0], 20_000, seed=3)
    assert draw == resample(rows, [1.0, 2.0, 7.0], 20_000, seed=3)
    counts = collections.Counter(r["id"] for r in draw)
    for i, share in enumerate([0.1, 0.2, 0.7]):
        sd = (share * (1 - share) / 20_000) ** 0.5
        assert abs(counts[i] / 20_000 - share) < 5 * sd


def test_each_thief_trains_on_as_many_rows_and_the_verifier_only_on_accepted_ones():
    rows = [{"id": i, "accepted": i % 3 == 0} for i in range(9)]
    assert thief_rows("passive", rows, seed=0) == rows
    verified = thief_rows("verifier", rows, seed=0)
    assert len(verified) == 9 and all(r["accepted"] for r in verified)
    adaptive = thief_rows("adaptive", rows, seed=0, values=[float(i) for i in range(9)], beta=2.0)
    assert len(adaptive) == 9
    assert sum(r["id"] for r in adaptive) > sum(r["id"] for r in rows)  # high-value rows drawn more often
    assert thief_rows("verifier", [{"accepted": False}], seed=0) == []
    with pytest.raises(ValueError, match="one value per row"):
        thief_rows("adaptive", rows, seed=0)
