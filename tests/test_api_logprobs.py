"""API log-probs → `TopKSignal`: fake OpenAI-compatible answers in both shapes, built from the tiny teacher's own
log-softmax with our tokenizer's tokens, give back exactly the teacher's top-k; another tokenizer's tokens, or another
split of the same text, are refused in one message; malformed answers fail in one line naming the position."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distill.losses.signals import UNRESOLVED_TAIL, TopKSignal
from distill.losses.support import support
from distill.teachers.api.client import TeacherApiError
from distill.teachers.api.logprobs import (
    TokenizerMismatch,
    TokenMap,
    chosen_ids,
    parse_logprobs,
    to_topk_signal,
)

K = 5
TEXT = "Once upon a time, a little cat sat in the sun."
TEXT_UTF8 = "Once upon a time, the café had crème brûlée."


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()


def teacher_rows(teacher, tokenizer, text: str) -> tuple[list[int], torch.Tensor]:
    """Our ids of `text` and the teacher's log-softmax predicting tokens 1 … n − 1 (rows (n − 1, V))."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = teacher(torch.tensor([ids])).logits[0, :-1].float()
    return ids, torch.log_softmax(logits, dim=-1)


def completions_answer(tokenizer, ids: list[int], logp: torch.Tensor, k: int = K) -> dict:
    """A `/v1/completions` answer with `echo` + `logprobs: k`, vLLM-style, tokens as our vocabulary writes them."""
    top, top_ids = logp.topk(k, dim=-1)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    chosen = [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
    tops = [None] + [{tokenizer.convert_ids_to_tokens(int(i)): float(v)
                      for i, v in zip(top_ids[r], top[r], strict=True)} for r in range(len(ids) - 1)]
    return {"object": "text_completion", "choices": [{"index": 0, "text": "", "logprobs": {
        "tokens": tokens, "token_logprobs": chosen, "top_logprobs": tops, "text_offset": list(range(len(ids)))}}]}


def chat_answer(tmap: TokenMap, ids: list[int], logp: torch.Tensor, start: int, k: int = K) -> dict:
    """A `/v1/chat/completions` answer whose content is tokens `start …` of `ids` (the rest is the prompt), each with
    its text (undecodable fragments as OpenAI writes them) and `bytes`."""
    def item(i: int, lp: float) -> dict:
        raw = tmap.id_bytes[i]
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(raw)}

    content = []
    for j in range(start, len(ids)):
        top, top_ids = logp[j - 1].topk(k)
        content.append({**item(ids[j], float(logp[j - 1, ids[j]])),
                        "top_logprobs": [item(int(i), float(v)) for i, v in zip(top_ids, top, strict=True)]})
    return {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                                                      "logprobs": {"content": content}}]}


def assert_matches(signal: TopKSignal, logp: torch.Tensor, k: int = K) -> None:
    expected = TopKSignal.from_logits(logp, k)
    assert signal.ids.shape == expected.ids.shape == (logp.shape[0], k)
    assert signal.logprobs.dtype == torch.float32 and signal.tail_logmass is None
    assert torch.equal(signal.ids, expected.ids)
    torch.testing.assert_close(signal.logprobs, expected.logprobs, atol=1e-6, rtol=0)
    # an API gives no tail: derived as log(1 − Σ top-k), close to the true one the logits give
    derived = torch.log(1 - signal.logprobs.double().exp().sum(-1)).float().clamp(min=UNRESOLVED_TAIL)
    torch.testing.assert_close(signal.tail(), derived, atol=1e-5, rtol=1e-5)  # fp32 vs fp64 sums
    torch.testing.assert_close(signal.tail(), expected.tail(), atol=1e-4, rtol=1e-4)


def test_completions_echo_gives_the_teachers_topk(teacher, tiny_tokenizer):
    ids, logp = teacher_rows(teacher, tiny_tokenizer, TEXT)
    positions = parse_logprobs(completions_answer(tiny_tokenizer, ids, logp))
    assert len(positions) == len(ids) and positions[0].top is None and positions[0].logprob is None
    assert chosen_ids(positions, tiny_tokenizer) == ids
    signal = to_topk_signal(positions, tiny_tokenizer)
    assert_matches(signal, logp)
    assert signal.capture_temperature == 1.0
    log_p, log_q = support(torch.randn(len(ids) - 1, len(tiny_tokenizer)), signal, 1.0)  # the loss takes it
    assert torch.isfinite(log_p).all() and torch.isfinite(log_q).all()


def test_chat_with_bytes_gives_the_teachers_topk(teacher, tiny_tokenizer):
    tmap = TokenMap(tiny_tokenizer)
    ids, logp = teacher_rows(teacher, tiny_tokenizer, TEXT_UTF8)
    start = 4  # the first 4 tokens play the prompt; the answer's rows are the teacher's rows start − 1 …
    answer = chat_answer(tmap, ids, logp, start)
    assert any("\ufffd" in item["token"] for item in answer["choices"][0]["logprobs"]["content"])  # bytes needed
    positions = parse_logprobs(answer)
    assert chosen_ids(positions, tmap) == ids[start:]
    assert_matches(to_topk_signal(positions, tmap), logp[start - 1:])


def test_every_token_of_ours_is_found_by_its_bytes(tiny_tokenizer):
    tmap = TokenMap(tiny_tokenizer)
    assert not tmap.ambiguous
    for i in range(len(tiny_tokenizer)):
        assert tmap.id_of("\ufffd", tmap.id_bytes[i]) == i
    assert tmap.id_of(" a") == tmap.id_of("Ġa") == tiny_tokenizer.convert_tokens_to_ids("Ġa")


def test_vllm_extra_chosen_entry_is_dropped_and_short_rows_refused(teacher, tiny_tokenizer):
    ids, logp = teacher_rows(teacher, tiny_tokenizer, TEXT)
    answer = completions_answer(tiny_tokenizer, ids, logp)
    tops = answer["choices"][0]["logprobs"]["top_logprobs"]
    r = next(r for r in range(len(ids) - 1) if tiny_tokenizer.convert_ids_to_tokens(ids[r + 1]) not in tops[r + 1])
    extra = {tiny_tokenizer.convert_ids_to_tokens(ids[r + 1]): float(logp[r, ids[r + 1]])}
    tops[r + 1] = {**extra, **tops[r + 1]}  # K + 1 entries there, the chosen one first as vLLM writes it
    assert_matches(to_topk_signal(parse_logprobs(answer), tiny_tokenizer), logp)
    with pytest.raises(TeacherApiError, match=rf"position {1 if r else 2} has 5 top log-probs, fewer than k = 6"):
        to_topk_signal(parse_logprobs(answer), tiny_tokenizer, k=6)
    del tops[3][next(iter(tops[3]))]  # a server that returned fewer at one position: k is the fewest, 4
    assert to_topk_signal(parse_logprobs(answer), tiny_tokenizer).k == K - 1


def test_foreign_token_is_refused(teacher, tiny_tokenizer):
    ids, logp = teacher_rows(teacher, tiny_tokenizer, TEXT)
    answer = completions_answer(tiny_tokenizer, ids, logp)
    answer["choices"][0]["logprobs"]["tokens"][2] = "▁upon"  # SentencePiece's writing: not a token of ours
    with pytest.raises(TokenizerMismatch) as caught:
        to_topk_signal(parse_logprobs(answer), tiny_tokenizer)
    message = str(caught.value)
    assert "\n" not in message
    assert "tokenizer differs from ours" in message and "position 2" in message and "'▁upon'" in message
    assert "student's tokenizer" in message and "distill generate" in message


def test_foreign_alternative_is_refused(teacher, tiny_tokenizer):
    ids, logp = teacher_rows(teacher, tiny_tokenizer, TEXT)
    answer = completions_answer(tiny_tokenizer, ids, logp)
    tops = answer["choices"][0]["logprobs"]["top_logprobs"]
    token, value = next(iter(tops[5].items()))
    tops[5] = {"<0x0A>": value, **{t: v for t, v in tops[5].items() if t != token}}
    with pytest.raises(TokenizerMismatch, match=r"position 5 the API's token '<0x0A>' \(a top alternative\)"):
        to_topk_signal(parse_logprobs(answer), tiny_tokenizer)


def test_another_split_of_the_same_text_is_refused(tiny_tokenizer):
    """Every token exists in ours, but ours makes `Ġa` where the API's tokenizer made `Ġ` + `a`."""
    tokens = ["O", "n", "c", "e", "Ġ", "u", "p", "o", "n", "Ġ", "a"]
    assert all(t in tiny_tokenizer.get_vocab() for t in tokens) and "Ġa" in tiny_tokenizer.get_vocab()
    top = [{"token": t, "logprob": -0.1, "bytes": None} for t in ("x", "y")]
    answer = {"choices": [{"logprobs": {"content": [{"token": t, "logprob": -0.1, "top_logprobs": top}
                                                    for t in tokens]}}]}
    with pytest.raises(TokenizerMismatch) as caught:
        to_topk_signal(parse_logprobs(answer), tiny_tokenizer)
    message = str(caught.value)
    assert "position 9" in message and "'Ġ'" in message and "our tokenizer makes 'Ġa' there" in message
    assert "\n" not in message


def test_answer_cut_inside_a_character_is_checked_up_to_it(teacher, tiny_tokenizer):
    tmap = TokenMap(tiny_tokenizer)
    ids, logp = teacher_rows(teacher, tiny_tokenizer, TEXT_UTF8)
    cut = next(j for j in range(len(ids)) if tmap.id_bytes[ids[j]][0] >= 0xC0) + 1  # the first byte of a character
    answer = chat_answer(tmap, ids[:cut], logp, 1)
    assert to_topk_signal(parse_logprobs(answer), tmap).ids.shape == (cut - 1, K)


def test_two_alternatives_naming_one_token_of_ours_are_refused(tiny_tokenizer):
    top = [{"token": "Ġa", "logprob": -0.5}, {"token": " a", "logprob": -0.6}]
    answer = {"choices": [{"logprobs": {"content": [{"token": "n", "logprob": -0.5, "top_logprobs": top}]}}]}
    with pytest.raises(TokenizerMismatch, match="position 0 the API's token 'Ġa' and another of the top"):
        to_topk_signal(parse_logprobs(answer), tiny_tokenizer)


def _completions(**logprobs) -> dict:
    base = {"tokens": ["O", "n"], "token_logprobs": [None, -0.5], "top_logprobs": [None, {"n": -0.5}]}
    return {"choices": [{"logprobs": {**base, **logprobs}}]}


def _chat(**item) -> dict:
    base = {"token": "n", "logprob": -0.5, "bytes": [110], "top_logprobs": [{"token": "n", "logprob": -0.5}]}
    return {"choices": [{"logprobs": {"content": [base, {**base, **item}]}}]}


@pytest.mark.parametrize(("answer", "expected"), [
    ({"error": "x"}, "no `choices` list"),
    ({"choices": [{"text": "hi"}]}, "choice 0 has no `logprobs` object: ask for them"),
    ({"choices": [{"logprobs": {"foo": 1}}]}, "neither `content` \\(chat\\) nor `tokens`"),
    (_completions(token_logprobs=None), "`logprobs.token_logprobs` is missing"),
    (_completions(tokens=["O"]), "lists differ in length \\(tokens 1, token_logprobs 2, top_logprobs 2\\)"),
    (_completions(token_logprobs=[None, "-0.5"]), "position 1: the logprob is missing or not a number \\('-0.5'\\)"),
    (_completions(token_logprobs=[None, 0.5]), "position 1: the logprob 0.5 is not a finite number ≤ 0"),
    (_completions(top_logprobs=[None, None]), "position 1: `top_logprobs\\[1\\]` is missing"),
    (_completions(tokens=["O", 7]), "position 1: the token is missing or not a string \\(7\\)"),
    (_chat(top_logprobs=None), "position 1: `top_logprobs` is missing or not a list"),
    (_chat(bytes=[300]), "position 1: `bytes` is not a list of byte values"),
    (_chat(top_logprobs=[{"token": "n"}]), r"position 1, top_logprobs\[0\]: the logprob is missing"),
    (_chat(token=None), "position 1: the token is missing"),
])
def test_malformed_answers_fail_in_one_line(answer, expected):
    with pytest.raises(TeacherApiError, match=expected) as caught:
        parse_logprobs(answer)
    assert "\n" not in str(caught.value)


def test_no_alternatives_is_refused(tiny_tokenizer):
    answer = {"choices": [{"logprobs": {"content": [{"token": "n", "logprob": -0.5, "top_logprobs": []}]}}]}
    with pytest.raises(TeacherApiError, match="position 0 has no top log-probs"):
        to_topk_signal(parse_logprobs(answer), tiny_tokenizer)
    assert math.isclose(parse_logprobs(answer)[0].logprob, -0.5)
