"""The batched sampling engine (`generation/engine.py`, `generation/sampling.py`): greedy agrees with transformers'
own `generate` (the slow twin), a row's text depends only on its key (batch size 1 = 8 = all, any companions), the
sampler draws from softmax(z / T) restricted to the nucleus, and reported / scored log-probs are the model's own."""

from __future__ import annotations

import math

import pytest
import torch

from distill.generation.engine import Engine, GenRequest
from distill.generation.sampling import SamplingParams, row_generator
from distill.losses.choice import choose_tokens

PROMPTS = ["Once upon a time", "The cat sat on the", "A", "In a small village there lived a girl named", "Tom and",
           "The sky was", "yesterday ivo saw", "the old owl"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_teacher_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_teacher_dir)


def _ids(tokenizer, prompts=PROMPTS):
    return [tokenizer(p)["input_ids"] for p in prompts]


def test_greedy_equals_transformers_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, max_batch_size=8)
    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    results = engine.generate([GenRequest(ids, params, (0, i)) for i, ids in enumerate(_ids(tokenizer))])
    for ids, result in zip(_ids(tokenizer), results, strict=True):
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=engine.stop_ids,
                             pad_token_id=engine.pad_id)[0, len(ids):].tolist()
        expected = out[: next((k for k, t in enumerate(out) if t in engine.stop_ids), len(out))]
        assert result.token_ids == expected
        assert result.finish_reason == ("stop" if len(expected) < len(out) or len(out) < 24 else "length")
        assert result.text == tokenizer.decode(expected, skip_special_tokens=True)


def test_a_rows_text_depends_only_on_its_key(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=16)
    requests = [GenRequest(ids, params, (5, i, s)) for s in range(2) for i, ids in enumerate(_ids(tokenizer))]
    texts = {bs: [r.text for r in Engine(model, tokenizer, max_batch_size=bs).generate(requests)]
             for bs in (1, 8, len(requests))}
    assert texts[1] == texts[8] == texts[len(requests)]
    # other companions, another order: the same text for the same key
    shuffled = list(reversed(requests[::2]))
    alone = [r.text for r in Engine(model, tokenizer, max_batch_size=5).generate(shuffled)]
    assert alone == list(reversed(texts[8][::2]))
    # and keys matter: another sample index gives other text for most rows
    assert sum(a != b for a, b in zip(texts[1][:8], texts[1][8:16], strict=True)) >= 4


def test_rows_leaving_the_batch_early_leave_the_others_unchanged(model_and_tokenizer):
    """Rows with 3, 7 and 16 new tokens in one batch: the short ones leave it (and its KV cache) early; every row
    must still equal its lone run, greedy and sampled."""
    model, tokenizer = model_and_tokenizer
    for temperature in (0.0, 1.0):
        requests = [GenRequest(ids, SamplingParams(temperature=temperature, max_new_tokens=length), (3, i))
                    for i, (ids, length) in enumerate(zip(_ids(tokenizer)[:6], (3, 7, 16, 16, 3, 7), strict=True))]
        together = Engine(model, tokenizer, max_batch_size=6).generate(requests)
        alone = [Engine(model, tokenizer).generate([r])[0] for r in requests]
        assert [r.token_ids for r in together] == [r.token_ids for r in alone]
        assert sorted({r.completion_tokens for r in together}) != [16]  # some rows did leave early


def test_sampler_draws_from_the_tempered_nucleus():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 20000
    generator = row_generator((1,))
    uniforms = torch.rand(n, generator=generator, dtype=torch.float64)
    for temperature, top_p in ((1.0, 1.0), (0.7, 1.0), (1.0, 0.8)):
        chosen = choose_tokens(logits.expand(n, -1), torch.full((n,), temperature), torch.full((n,), top_p),
                               uniforms)
        probs = torch.softmax(logits.double() / temperature, -1)
        order = torch.argsort(probs, descending=True)
        before = probs[order].cumsum(0) - probs[order]
        nucleus = order[before < top_p]
        expected = torch.zeros_like(probs)
        expected[nucleus] = probs[nucleus] / probs[nucleus].sum()
        observed = torch.bincount(chosen, minlength=len(logits)).double() / n
        assert (observed[expected == 0] == 0).all()
        # within 5 standard errors of each expected frequency
        assert ((observed - expected).abs() <= 5 * (expected * (1 - expected) / n).sqrt() + 1e-12).all(), (
            temperature, top_p, observed, expected)


def test_zero_temperature_and_tiny_top_p_are_greedy():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(0))
    u = torch.rand(16, dtype=torch.float64)
    greedy = logits.argmax(-1)
    assert torch.equal(choose_tokens(logits, torch.zeros(16), torch.ones(16), u), greedy)
    assert torch.equal(choose_tokens(logits, torch.ones(16), torch.full((16,), 1e-9), u), greedy)


def test_logprobs_and_scores_are_the_models_own(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, max_batch_size=4)
    ids = _ids(tokenizer)[:4]
    results = engine.generate([GenRequest(p, SamplingParams(temperature=1.0, max_new_tokens=12, logprobs=3), (9, i))
                               for i, p in enumerate(ids)])
    for prompt, result in zip(ids, results, strict=True):
        full = prompt + result.token_ids
        with torch.no_grad():
            # the engine's distribution is over the tokenizer's ids (the model's output may be wider: padding rows)
            logprobs = torch.log_softmax(model(torch.tensor([full])).logits[0, :, : len(tokenizer)].float(), -1)
        assert result.logprobs is not None and len(result.logprobs) == len(result.token_ids)
        for t, entry in enumerate(result.logprobs):
            row = logprobs[len(prompt) - 1 + t]
            assert math.isclose(entry.logprob, row[entry.token_id].item(), abs_tol=1e-4)
            assert [i for i, _ in entry.top] == row.topk(3).indices.tolist()
        scored = engine.score([full], top_logprobs_k=2)[0]
        assert scored[0] is None and len(scored) == len(full)
        for t in range(1, len(full)):
            assert math.isclose(scored[t].logprob, logprobs[t - 1, full[t]].item(), abs_tol=1e-4)
            assert [i for i, _ in scored[t].top] == logprobs[t - 1].topk(2).indices.tolist()


def test_stop_strings_length_limits_and_logits_processors(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = _ids(tokenizer)[:3]
    free = Engine(model, tokenizer).generate([GenRequest(p, SamplingParams(temperature=0.0, max_new_tokens=20), (0,))
                                              for p in ids])
    word = next(r.text.split()[1] for r in free if len(r.text.split()) > 2)
    stopped = Engine(model, tokenizer).generate([GenRequest(p, SamplingParams(temperature=0.0, max_new_tokens=20,
                                                                              stop=(word,)), (0,)) for p in ids])
    for before, after in zip(free, stopped, strict=True):
        if word in before.text:
            assert after.text == before.text[: before.text.index(word)] and after.finish_reason == "stop"
        else:
            assert after.text == before.text
    none = Engine(model, tokenizer).generate([GenRequest(ids[0], SamplingParams(max_new_tokens=0), (0,))])[0]
    assert none.token_ids == [] and none.finish_reason == "length" and none.completion_tokens == 0
    banned = free[0].token_ids[0]

    def ban(_history: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[:, banned] = float("-inf")
        return logits

    result = Engine(model, tokenizer, logits_processors=[ban]).generate(
        [GenRequest(ids[0], SamplingParams(temperature=0.0, max_new_tokens=20), (0,))])[0]
    assert banned not in result.token_ids


def test_streamed_pieces_add_up_to_the_text(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    pieces: dict[int, list[str]] = {}
    requests = [GenRequest(p, SamplingParams(temperature=1.0, max_new_tokens=16, stop=("the",)), (2, i))
                for i, p in enumerate(_ids(tokenizer)[:5])]
    results = Engine(model, tokenizer, max_batch_size=5).generate(
        requests, on_token=lambda row, _token, piece: pieces.setdefault(row, []).append(piece))
    for i, result in enumerate(results):
        assert "".join(pieces.get(i, [])) == result.text
    # text arrives as it is written, not all at the end
    assert max(sum(1 for p in row if p) for row in pieces.values()) > 3


def test_the_fast_sampler_chooses_what_the_full_sort_chooses(monkeypatch):
    """`choose_tokens` sorts only each row's most likely tokens, tier by tier; `choose_tokens_reference` sorts all of
    them. Peaked rows settle in the first tier, flatter ones in the second, the flattest (and draws past the
    candidates) take the full sort: the same tokens, and every path taken."""
    from distill.losses import choice

    settled_at: list[int] = []
    among = choice._among_candidates

    def counting(scaled, log_total, top_p, uniforms, k):
        picked, settled = among(scaled, log_total, top_p, uniforms, k)
        settled_at.extend([k] * int(settled.sum()))
        return picked, settled

    monkeypatch.setattr(choice, "_among_candidates", counting)
    generator = torch.Generator().manual_seed(0)
    rows, vocab = 64, 2 * choice.CANDIDATE_TIERS[-1] + 37
    full_sorts = 0
    for scale in (0.05, 0.3, 2.0, 8.0):
        logits = torch.randn(rows, vocab, generator=generator) * scale
        uniforms = torch.rand(rows, dtype=torch.float64, generator=generator)
        uniforms[:4] = torch.tensor([0.0, 1 - 1e-12, 0.999, 0.5], dtype=torch.float64)
        temperature = torch.rand(rows, generator=generator) * 1.5
        temperature[::7] = 0
        top_p = torch.where(torch.rand(rows, generator=generator) < 0.5, torch.ones(rows),
                            torch.rand(rows, generator=generator))
        before = len(settled_at)
        assert torch.equal(choice.choose_tokens(logits, temperature, top_p, uniforms),
                           choice.choose_tokens_reference(logits, temperature, top_p, uniforms))
        full_sorts += int((temperature > 0).sum()) - (len(settled_at) - before)
    assert set(settled_at) == set(choice.CANDIDATE_TIERS) and full_sorts > 0


class _Recorder:
    """A stateful processor that remembers each row's prompt at `start`, follows `select`, and checks at every step
    that the row it is given is still the one it remembers; `score` marks that scoring used it."""

    def __init__(self) -> None:
        self.starts, self.selects, self.scored = 0, 0, 0
        self.prompts: list[list[int]] = []
        self.width = 0

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.starts += 1
        self.width = input_ids.shape[-1]
        self.prompts = [[t for t, m in zip(r, k, strict=True) if m] for r, k in
                        zip(input_ids.tolist(), attention_mask.tolist(), strict=True)]

    def select(self, index: torch.Tensor) -> None:
        self.selects += 1
        self.prompts = [self.prompts[i] for i in index.tolist()]

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        assert len(self.prompts) == input_ids.shape[0]
        for row, prompt in zip(input_ids.tolist(), self.prompts, strict=True):
            assert row[self.width - len(prompt):self.width] == prompt
        return logits

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        self.scored += 1
        return logits


def test_stateful_processors_get_start_select_and_score(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    recorder = _Recorder()
    engine = Engine(model, tokenizer, max_batch_size=4, logits_processors=[recorder])
    requests = [GenRequest(p, SamplingParams(temperature=1.0, max_new_tokens=n), (6, i))
                for i, (p, n) in enumerate(zip(_ids(tokenizer)[:6], (2, 9, 4, 12, 3, 6), strict=True))]
    plain = Engine(model, tokenizer, max_batch_size=4).generate(requests)
    assert [r.token_ids for r in engine.generate(requests)] == [r.token_ids for r in plain]
    assert recorder.starts == 2 and recorder.selects >= 2  # two batches; rows left each of them
    engine.score([_ids(tokenizer)[0]])
    assert recorder.scored == 1
