"""Each evaluation metric against values computed by hand on tiny inputs."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distill.data.formatting import IGNORE_INDEX
from distill.eval import metrics
from distill.eval.doc_stats import ECE_BINS, DocStats, column_names, score_documents, token_stats


def _stats(logits: list[list[float]], targets: list[int], reference: list[list[float]] | None = None) -> DocStats:
    def logp(values: list[list[float]]) -> torch.Tensor:
        return torch.log_softmax(torch.tensor(values), dim=-1)

    rows = token_stats(logp(logits), torch.tensor(targets), None if reference is None else logp(reference))
    return DocStats(column_names(reference is not None), rows.sum(0, keepdim=True).numpy())


def test_perplexity_and_accuracy_by_hand():
    # Two tokens over a 2-word vocabulary: p = (0.5, 0.5) predicting 0, then p = (e/(1+e), 1/(1+e)) predicting 1.
    stats = _stats([[0.0, 0.0], [1.0, 0.0]], [0, 1])
    nll = (math.log(2) + math.log(1 + math.e)) / 2
    assert metrics.point(stats, "nll") == pytest.approx(nll)
    # Token 1: tie → argmax 0 = target (correct); token 2: argmax 0 ≠ target 1.
    assert metrics.point(stats, "top1_acc") == pytest.approx(0.5)


def test_agreement_and_kl_in_both_directions_by_hand():
    p = [0.7, 0.2, 0.1]  # reference (teacher)
    q = [0.2, 0.5, 0.3]  # model
    stats = _stats([np.log(q).tolist()], [0], [np.log(p).tolist()])
    forward = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    reverse = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert metrics.point(stats, "kl_forward") == pytest.approx(forward, rel=1e-6)
    assert metrics.point(stats, "kl_reverse") == pytest.approx(reverse, rel=1e-6)
    assert metrics.point(stats, "agreement") == 0.0  # teacher's top-1 is 0, the model's is 1
    same = _stats([np.log(p).tolist()], [0], [np.log(p).tolist()])
    assert metrics.point(same, "agreement") == 1.0
    assert metrics.point(same, "kl_forward") == pytest.approx(0.0, abs=1e-7)


def test_ece_by_hand():
    # Four tokens: confidences 0.9, 0.9 (one right, one wrong) → bin of 0.9: |1.8 − 1| = 0.8;
    # 0.6 right → |0.6 − 1| = 0.4; 0.55 wrong → |0.55 − 0| = 0.55. ECE = (0.8 + 0.4 + 0.55) / 4.
    def two_way(p: float) -> list[float]:
        return [math.log(p), math.log(1 - p)]

    stats = _stats([two_way(0.9), two_way(0.9), two_way(0.6), two_way(0.55)], [0, 1, 0, 1])
    assert metrics.point(stats, "ece") == pytest.approx((0.8 + 0.4 + 0.55) / 4)
    bins = metrics.calibration_bins(stats)
    assert len(bins) == ECE_BINS
    top = next(b for b in bins if b["lo"] <= 0.9 < b["hi"])
    assert top["count"] == 2 and top["confidence"] == pytest.approx(0.9) and top["accuracy"] == pytest.approx(0.5)


def test_ratio_of_sums_not_mean_of_ratios():
    # Doc A: 1 token with nll 1; doc B: 3 tokens with nll 3 each → NLL = (1 + 9) / 4, not (1 + 3) / 2.
    cols = column_names(False)
    values = np.zeros((2, len(cols)))
    values[:, cols.index("tokens")] = [1, 3]
    values[:, cols.index("nll")] = [1, 9]
    assert metrics.point(DocStats(cols, values), "nll") == pytest.approx(2.5)


def _random_docs(n: int, seed: int, vocab: int = 11) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


class _Table(torch.nn.Module):
    """A 'model' whose logits at each position are a fixed function of the current token (a bigram table)."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_scoring_in_batches_equals_token_by_token_sums():
    docs = _random_docs(7, seed=1)
    teacher, student = _Table(11, 0), _Table(11, 1)
    result = score_documents({"t": teacher, "s": student}, docs, reference="t", batch_size=3, progress=False)
    nll_by_hand = []
    for doc in docs:
        logp = torch.log_softmax(student.table.detach()[torch.tensor(doc[:-1])], -1)
        nll_by_hand.append(float(-logp[range(len(doc) - 1), doc[1:]].sum()))
    stats = result.stats["s"]
    np.testing.assert_allclose(stats.values[:, stats.index("nll")], nll_by_hand, rtol=1e-5)
    np.testing.assert_array_equal(stats.values[:, stats.index("tokens")], [len(d) - 1 for d in docs])
    assert not result.stats["t"].has("agree") and stats.has("kl_forward")


def test_paired_difference_and_gap_recovered_have_the_point_estimate_inside():
    docs = _random_docs(30, seed=2)
    models = {"teacher": _Table(11, 0), "kd": _Table(11, 1), "baseline": _Table(11, 2)}
    with torch.no_grad():  # make kd half-way between baseline and teacher
        models["kd"].table.copy_((models["teacher"].table + models["baseline"].table) / 2)
    stats = score_documents(models, docs, reference="teacher", progress=False).stats
    diff = metrics.paired_intervals(stats["kd"], stats["baseline"])["nll"]
    expected = metrics.point(stats["kd"], "nll") - metrics.point(stats["baseline"], "nll")
    assert diff.mean == pytest.approx(expected)
    assert diff.ci_low <= diff.mean <= diff.ci_high
    gap = metrics.gap_recovered(stats["kd"], stats["baseline"], stats["teacher"])
    nll = {k: metrics.point(v, "nll") for k, v in stats.items()}
    assert gap.mean == pytest.approx((nll["baseline"] - nll["kd"]) / (nll["baseline"] - nll["teacher"]))
    intervals = metrics.metric_intervals(stats["kd"])
    assert intervals["ppl"].mean == pytest.approx(math.exp(intervals["nll"].mean))


def _loud_padding_twins(tokenizer, seed: int):
    """A tiny Llama padded with 64 rows past the tokenizer whose padding logits dwarf the real ones, and its twin
    with those rows cut off: the same model as far as any real token is concerned."""
    from transformers import LlamaForCausalLM

    from distill.builtin.tiny_models import tiny_llama_config

    n = len(tokenizer)
    config = tiny_llama_config(n, hidden=32, layers=1, heads=2, kv_heads=1)
    config.vocab_size = n + 64
    torch.manual_seed(seed)
    padded = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        padded.model.embed_tokens.weight[:, 0] = 20.0  # a constant direction in every hidden state …
        padded.lm_head.weight[n:, 0] = 10.0  # … that only the padding rows read: large logits on ids no token has
    cut_config = tiny_llama_config(n, hidden=32, layers=1, heads=2, kv_heads=1)
    cut_config.vocab_size = n
    cut = LlamaForCausalLM(cut_config).eval()
    rows = ("model.embed_tokens.weight", "lm_head.weight")
    cut.load_state_dict({k: v[:n] if k in rows else v for k, v in padded.state_dict().items()})
    return padded, cut


def test_padding_rows_do_not_change_nll_ece_or_agreement(tiny_tokenizer):
    from distill.builtin.corpus import tiny_stories
    from distill.eval.eval_set import EvalSet
    from distill.eval.runner import evaluate_set

    teacher_padded, teacher_cut = _loud_padding_twins(tiny_tokenizer, seed=0)
    student_padded, student_cut = _loud_padding_twins(tiny_tokenizer, seed=1)
    ids = torch.tensor([tiny_tokenizer("anna saw a dog")["input_ids"]])
    assert int(student_padded(input_ids=ids).logits.argmax(-1).min()) >= len(tiny_tokenizer)  # padding is loud
    eval_set = EvalSet("held", "memory", "", [{"text": t} for t in tiny_stories(5, seed=4)])
    blocks = [evaluate_set({"teacher": t, "student": s}, tiny_tokenizer, eval_set, reference="teacher",
                           baseline=None, n_resamples=50, max_length=64)[0]["metrics"]
              for t, s in ((teacher_padded, student_padded), (teacher_cut, student_cut))]
    for name, keys in (("teacher", ("nll", "ece", "top1_acc")),
                       ("student", ("nll", "ece", "top1_acc", "agreement", "kl_forward", "kl_reverse"))):
        for key in keys:
            assert blocks[0][name][key]["mean"] == pytest.approx(blocks[1][name][key]["mean"], rel=1e-4, abs=1e-6), \
                (name, key)


def test_generation_never_emits_a_padding_id(tiny_tokenizer):
    from distill.eval.generation import generate

    padded, cut = _loud_padding_twins(tiny_tokenizer, seed=2)
    prompts = ["anna saw a dog", "the cow likes cleo because"]
    loud = generate(padded, tiny_tokenizer, prompts, max_new_tokens=6, progress=False)
    plain = generate(cut, tiny_tokenizer, prompts, max_new_tokens=6, progress=False)
    assert loud.texts == plain.texts and loud.lengths == plain.lengths


def test_scoring_throughput_counts_every_input_token_not_only_the_scored_ones(monkeypatch):
    """A chat's questions and markup cost a forward pass as much as its answers: tokens/s counts all input tokens
    (padding excluded), so the same model is not ~3x "slower" on a chat set than on text. Each forward pass is made
    to take exactly one second."""
    from distill.eval import doc_stats

    clock = itertools.count()
    monkeypatch.setattr(doc_stats, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    docs = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]]
    labels = [[IGNORE_INDEX] * 4 + [5, 6], [IGNORE_INDEX] * 3 + [10]]  # 3 of the 10 input tokens are scored
    result = score_documents({"m": _Table(11, 0)}, docs, labels=labels, batch_size=2, progress=False)
    assert (result.input_tokens, result.scored_tokens) == (10, 3)
    assert result.tokens_per_s["m"] == pytest.approx(10.0)  # 10 input tokens in one 1-second forward pass
    assert result.stats["m"].values[:, result.stats["m"].index("tokens")].sum() == 3
