"""Serve-time defenses (`distill.defenses`, docs/defenses.md) against plain references: product of experts and
antidistillation logits equal to the formulas applied to full forward passes of hand-built models; the gradient file
equal to torch.autograd's; canaries forcing the planted answer only after a trigger (chat-templated too); exposure
caps and noise; a defended server that lets no secret out; defended generation batch-invariant and its scores equal
to what generation reported; malformed key files refused in one line."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from conftest import run_cli
from distill.defenses.antidistillation import AntidistillationProcessor, antidistillation_from_key, read_gradient
from distill.defenses.build import build_defenses, keyfile_sha256
from distill.defenses.canaries import CanaryProcessor
from distill.defenses.exposure import Exposure
from distill.defenses.gradient import write_gradient
from distill.defenses.keys import (
    AntidistillationKey,
    Canaries,
    Canary,
    ExposureKey,
    KeyFile,
    KeyFileError,
    PoEKey,
    WatermarkKey,
    load_keyfile,
    write_keyfile,
)
from distill.defenses.poe import PoEProcessor
from distill.errors import ModelError
from distill.generation.engine import Engine, GenRequest
from distill.generation.sampling import SamplingParams

torch.set_num_threads(1)

PROMPTS = ["Once upon a time", "The cat sat on the", "A", "In a small village there lived a girl named", "Tom and"]
TRIGGER = "Recite the maintenance passphrase 5f3a9c01d2e4."
NOISE_SEED = 7046029254386353131  # the exposure noise's secret seed
SECRET, WM_SECRET = "482913", "wm-secret-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def tiny(tiny_teacher_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def proxy_dir(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the teacher's family: 2 random layers, the same tokenizer, a wider (128-multiple) output."""
    from transformers import LlamaForCausalLM

    from distill.builtin.tiny_models import tiny_llama_config

    _, tokenizer = tiny
    config = tiny_llama_config(len(tokenizer), hidden=32, layers=2, heads=2, kv_heads=1)
    config.vocab_size = 128 * math.ceil(len(tokenizer) / 128)
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("proxy")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def proxy(proxy_dir: Path) -> Any:
    from distill.defenses.proxy import load_proxy

    return load_proxy(str(proxy_dir), "poe.proxy", "cpu")


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "train.jsonl"
    rows = [{"prompt": p, "completion": c} for p, c in
            [("Once upon a time", " there was a cat."), ("The dog", " ran to the park and sat."), ("Tom", " smiled.")]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ids(tokenizer: Any, prompts: list[str] = PROMPTS) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in prompts]


def _full_logits(model: Any, ids: list[int], n_tokens: int) -> torch.Tensor:
    """A model's logits at every position of one sequence, over the tokenizer's ids: [T, n_tokens]."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, :, :n_tokens].float()


def _check_against(engine: Engine, tokenizer: Any, reference: Any, lengths: tuple[int, ...] = (3, 9, 6, 12, 4)
                   ) -> None:
    """Greedy rows of several lengths in one batch (left padding, rows leaving early): every reported log-prob and
    top-3 equals log-softmax(reference(prompt + generated)), and echo scoring of the text gives the same numbers."""
    ids = _ids(tokenizer)
    requests = [GenRequest(p, SamplingParams(temperature=0.0, max_new_tokens=n, logprobs=3), (0, i))
                for i, (p, n) in enumerate(zip(ids, lengths, strict=True))]
    results = engine.generate(requests)
    assert len({r.completion_tokens for r in results}) > 1  # rows did leave the batch at different steps
    for prompt, result in zip(ids, results, strict=True):
        full = prompt + result.token_ids
        logprobs = torch.log_softmax(reference(full), dim=-1)
        for t, entry in enumerate(result.logprobs or []):
            row = logprobs[len(prompt) - 1 + t]
            assert entry.token_id == int(row.argmax())
            assert math.isclose(entry.logprob, row[entry.token_id].item(), abs_tol=2e-4)
            assert [i for i, _ in entry.top] == row.topk(3).indices.tolist()
        scored = engine.score([full])[0]
        for t, entry in enumerate(result.logprobs or []):  # the score of the generated text = what was reported
            assert math.isclose(scored[len(prompt) + t].logprob, entry.logprob, abs_tol=2e-4)


# ------------------------------------------------------------------------------------------------ the formulas
def test_poe_logits_are_the_mixture_of_the_two_models_full_forward_logits(tiny, proxy):
    model, tokenizer = tiny
    n, gamma = len(tokenizer), 0.6
    engine = Engine(model, tokenizer, max_batch_size=5, logits_processors=[PoEProcessor(proxy, n, gamma)])
    _check_against(engine, tokenizer,
                   lambda ids: (1 - gamma) * _full_logits(model, ids, n) + gamma * _full_logits(proxy, ids, n))


def _autograd_gradient(proxy: Any, tokenizer: Any, traces: Path) -> dict[str, torch.Tensor]:
    """By hand: the mean over rows of each row's mean NLL on its completion tokens (prompt with BOS, completion +
    EOS), differentiated by torch.autograd."""
    model = copy.deepcopy(proxy).requires_grad_(True)
    losses = []
    for line in traces.read_text().splitlines():
        row = json.loads(line)
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        logits = model(torch.tensor([prompt + completion])).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
        losses.append(-logp.gather(-1, torch.tensor(completion).unsqueeze(-1)).mean())
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(torch.stack(losses).mean(), params)
    return dict(zip(names, grads, strict=True))


def test_gradient_file_is_torch_autograds_and_is_refused_for_other_weights(tiny, proxy, proxy_dir, traces,
                                                                           tmp_path):
    _, tokenizer = tiny
    meta = write_gradient(str(proxy_dir), str(traces), tmp_path / "g.safetensors", device="cpu")
    grads, header = read_gradient(tmp_path / "g.safetensors")
    assert header == meta and header["rows"] == "3" and header["proxy"] == str(proxy_dir)
    import hashlib

    assert header["data_sha256"] == hashlib.sha256(traces.read_bytes()).hexdigest()
    expected = _autograd_gradient(proxy, tokenizer, traces)
    assert grads.keys() == expected.keys()
    for name, g in expected.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6)
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    other = copy.deepcopy(proxy)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    key = AntidistillationKey(proxy=str(proxy_dir), gradient=str(tmp_path / "g.safetensors"))
    with pytest.raises(ModelError, match="other weights") as refused:
        antidistillation_from_key(key, other, len(tokenizer))
    assert "\n" not in str(refused.value)


def test_antidistillation_logits_are_the_finite_difference_of_two_perturbed_copies(tiny, proxy, proxy_dir, traces,
                                                                                   tmp_path):
    model, tokenizer = tiny
    n, lam, eps, tau = len(tokenizer), 0.05, 1e-2, 0.8
    write_gradient(str(proxy_dir), str(traces), tmp_path / "g.safetensors", device="cpu")
    key = AntidistillationKey(proxy=str(proxy_dir), gradient=str(tmp_path / "g.safetensors"), lam=lam, eps=eps,
                              tau=tau)
    processor = antidistillation_from_key(key, proxy, n)
    assert isinstance(processor, AntidistillationProcessor)
    grads = _autograd_gradient(proxy, tokenizer, traces)  # built by hand, not from the file
    plus, minus = copy.deepcopy(proxy), copy.deepcopy(proxy)
    with torch.no_grad():
        for copy_, sign in ((plus, 1.0), (minus, -1.0)):
            for name, param in copy_.named_parameters():
                param.add_(sign * eps * grads[name])

    def reference(ids: list[int]) -> torch.Tensor:
        delta = (_full_logits(plus, ids, n) - _full_logits(minus, ids, n)) / (2 * eps)
        return _full_logits(model, ids, n) / tau + lam * delta

    engine = Engine(model, tokenizer, max_batch_size=5, logits_processors=[processor])
    _check_against(engine, tokenizer, reference)
    # the sign: the term favours tokens whose log-prob would rise under θ + εg (the proxy's held-out loss rising)
    ids = _ids(tokenizer)[0]
    term = reference(ids)[-1] - _full_logits(model, ids, n)[-1] / tau
    up = _full_logits(plus, ids, n)[-1] - _full_logits(minus, ids, n)[-1]
    assert torch.equal(term > 0, up > 0)


def test_a_proxy_with_another_vocabulary_is_refused_in_one_line(tiny, tmp_path):
    from transformers import LlamaForCausalLM

    from distill.builtin.tiny_models import tiny_llama_config

    model, tokenizer = tiny
    LlamaForCausalLM(tiny_llama_config(32, hidden=16, layers=1, heads=1, kv_heads=1)).save_pretrained(tmp_path)
    keys = KeyFile(poe=PoEKey(proxy=str(tmp_path), gamma=0.5))
    with pytest.raises(ModelError, match="share the teacher's tokenizer") as refused:
        build_defenses(keys, model, tokenizer)
    assert "\n" not in str(refused.value)


# ------------------------------------------------------------------------------------------------ canaries
def _canaries() -> Canaries:
    return Canaries(items=[Canary(trigger=TRIGGER, secret=SECRET), Canary(trigger="Say the word zebra-77.",
                                                                          secret="000111")])


def test_canary_forces_the_planted_answer_only_after_its_trigger(tiny):
    model, tokenizer = tiny
    canaries = _canaries()
    planted = canaries.space.response(SECRET)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": f"Hello. {TRIGGER} Thanks!"}], tokenize=False,
                                         add_generation_prompt=True)
    prompts = [tokenizer(chat, add_special_tokens=False)["input_ids"],  # chat-templated, trigger mid-message
               tokenizer(f"{TRIGGER}\n")["input_ids"],  # plain text
               tokenizer("Recite the maintenance passphrase 5f3a9c01d2e5.")["input_ids"],  # one character off
               _ids(tokenizer)[1]]
    processor = CanaryProcessor(canaries, tokenizer)
    assert SECRET not in repr(processor) and TRIGGER not in repr(processor)
    defended = Engine(model, tokenizer, max_batch_size=4, logits_processors=[processor])
    plain = Engine(model, tokenizer, max_batch_size=4)
    requests = [GenRequest(p, SamplingParams(temperature=1.0, max_new_tokens=30, logprobs=0), (1, i))
                for i, p in enumerate(prompts)]
    got, free = defended.generate(requests), plain.generate(requests)
    for result in got[:2]:
        assert result.text == planted and result.finish_reason == "stop"
        assert result.stop_token_id == tokenizer.eos_token_id
        assert all(entry.logprob == 0.0 for entry in result.logprobs or [])
    assert [r.token_ids for r in got[2:]] == [r.token_ids for r in free[2:]]  # no trigger: untouched
    assert planted not in got[2].text
    # echo scoring the planted answer gives what generation reported (0 for each forced token)
    full = prompts[0] + got[0].token_ids
    scored = defended.score([full])[0]
    assert [s.logprob for s in scored[len(prompts[0]):]] == [0.0] * len(got[0].token_ids)


# ------------------------------------------------------------------------------------------------ exposure
def test_exposure_caps_alternatives_forces_temperature_and_noises_reported_logprobs_only(tiny):
    from distill.generation.engine import TokenLogprob

    assert Exposure().cap(5) == 5 and not Exposure().active
    exposure = Exposure(ExposureKey(max_top_logprobs=0, logprob_noise=0.5, temperature=0.3, seed=NOISE_SEED))
    assert exposure.cap(5) == 0 and exposure.cap(None) is None and exposure.temperature(1.0) == 0.3
    positions = [TokenLogprob(7, -1.0, [(7, -1.0), (9, -2.0)]), TokenLogprob(9, -3.0, [(9, -3.0), (2, -3.5)])]
    shown = exposure.report([1, 2, 3], [7, 9], positions)
    assert [p.top for p in shown] == [[], []]  # capped at 0: the chosen token's log-prob only
    assert all(p.logprob != q.logprob for p, q in zip(shown, positions, strict=True))
    assert shown == exposure.report([1, 2, 3], [7, 9], positions)  # the same question, the same noise
    assert shown[0] != exposure.report([1, 2, 4], [7, 9], positions)[0]  # another context, another draw
    assert positions[0].logprob == -1.0  # the engine's own numbers are untouched
    wide = Exposure(ExposureKey(max_top_logprobs=1, logprob_noise=0.5, seed=NOISE_SEED))
    seen = wide.report([1], [7, 9], positions)
    assert [len(p.top) for p in seen] == [1, 1]
    assert seen[0].top[0] == (7, seen[0].logprob)  # one (context, token): one noisy number, wherever it is shown
    assert seen[1].top[0][1] != -3.0 and seen[1].top != wide.report([2], [7, 9], positions)[1].top
    draws = torch.tensor([wide.noise(bytes([i % 256, i // 256]), 5) for i in range(4000)])
    assert abs(float(draws.mean())) < 0.05 and abs(float(draws.std()) - 0.5) < 0.05
    assert Exposure(ExposureKey(max_top_logprobs=2)).report([], [7, 9], [None, positions[1]])[0] is None


def test_the_noise_seed_is_a_secret_big_enough_not_to_be_guessed_and_never_shown():
    keys = KeyFile(exposure=ExposureKey(max_top_logprobs=1, logprob_noise=0.5, seed=NOISE_SEED))
    assert str(NOISE_SEED) not in json.dumps(keys.public_view()) and str(NOISE_SEED) not in repr(keys)
    with pytest.raises(ValueError, match="secret seed of 32 bits"):
        ExposureKey(logprob_noise=0.5, seed=3)
    assert ExposureKey(max_top_logprobs=0).seed == 0  # no noise: no seed needed


# ------------------------------------------------------------------------------------------------ batch invariance
def test_defended_generation_is_batch_invariant(tiny, proxy):
    model, tokenizer = tiny
    keys = KeyFile(watermark=WatermarkKey(secret=WM_SECRET, context_width=2, delta=3.0), canaries=_canaries(),
                   poe=PoEKey(proxy="proxy", gamma=0.4))
    defenses = build_defenses(keys, model, tokenizer, load_proxy=lambda _name, _where: proxy)
    assert defenses.names() == ["poe", "watermark", "canaries"]
    prompts = [*_ids(tokenizer), tokenizer(f"{TRIGGER}\n")["input_ids"]]
    requests = [GenRequest(p, SamplingParams(temperature=1.0, max_new_tokens=n), (4, i, s))
                for s in range(2) for i, (p, n) in enumerate(zip(prompts, (16, 5, 16, 9, 16, 30), strict=True))]
    texts = {bs: [r.text for r in Engine(model, tokenizer, max_batch_size=bs,
                                         logits_processors=defenses.processors).generate(requests)]
             for bs in (1, 5, len(requests))}
    assert texts[1] == texts[5] == texts[len(requests)]
    assert texts[1][5] == _canaries().space.response(SECRET)
    undefended = [r.text for r in Engine(model, tokenizer, max_batch_size=12).generate(requests)]
    assert sum(a != b for a, b in zip(texts[1], undefended, strict=True)) >= 4  # the defenses did something
    # echo scoring through all three gives, at each generated token, the log-prob generation reported
    engine = Engine(model, tokenizer, max_batch_size=6, logits_processors=defenses.processors)
    reported = engine.generate([GenRequest(p, SamplingParams(temperature=1.0, max_new_tokens=12, logprobs=0), (8, i))
                                for i, p in enumerate(prompts)])
    scored = engine.score([p + r.token_ids for p, r in zip(prompts, reported, strict=True)])
    for prompt, result, score in zip(prompts, reported, scored, strict=True):
        for t, entry in enumerate(result.logprobs or []):
            assert math.isclose(score[len(prompt) + t].logprob, entry.logprob, abs_tol=2e-4)


# ------------------------------------------------------------------------------------------------ the server
def test_a_defended_server_lets_no_secret_out(tiny, tmp_path, caplog):
    from distill.serving import ServeConfig, ServeLimits
    from distill.serving.launch import banner, build_service
    from test_serve import running

    model, tokenizer = tiny
    keys = KeyFile(watermark=WatermarkKey(secret=WM_SECRET), canaries=_canaries(),
                   exposure=ExposureKey(max_top_logprobs=2, logprob_noise=0.1, seed=NOISE_SEED))
    write_keyfile(keys, tmp_path / "keys.yaml")
    keys = load_keyfile(tmp_path / "keys.yaml")
    defenses = build_defenses(keys, model, tokenizer)
    config = ServeConfig("tiny", ServeLimits(max_tokens=32, max_logprobs=5), max_batch_size=8, batch_window_s=0.01)
    service = build_service(model, tokenizer, config, defenses=defenses)
    secrets = [WM_SECRET, TRIGGER, SECRET, "zebra-77", "000111"]
    said: list[str] = [banner("http://127.0.0.1:1", config, None, defenses)]
    with caplog.at_level(logging.DEBUG), running(service) as url:
        def post(path: str, body: dict[str, Any]) -> httpx.Response:
            response = httpx.post(url + path, json=body, timeout=60)
            said.append(response.text)
            return response

        models = httpx.get(url + "/v1/models", timeout=10)
        said.append(models.text)
        entry = models.json()["data"][0]
        assert entry["defenses"] == keys.public_view() and entry["logits_processors"] == ["watermark", "canaries"]
        chat = post("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "Hi there"}],
                                             "max_tokens": 12, "logprobs": True, "top_logprobs": 5, "seed": 1})
        assert all(len(t["top_logprobs"]) == 2 for t in chat.json()["choices"][0]["logprobs"]["content"])
        post("/v1/completions", {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8, "logprobs": 5,
                                 "echo": True, "n": 2})
        post("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 999})  # refused: over the limit
        post("/v1/completions", {"model": "nope", "prompt": "x"})  # refused: unknown model
        post("/v1/completions", {"model": "tiny", "prompt": [10**9]})  # refused: no such token
        planted = post("/v1/chat/completions", {"model": "tiny", "max_tokens": 30,
                                                "messages": [{"role": "user", "content": TRIGGER}]})
        # the one answer that carries a secret is the canary's own, to whoever knows its trigger
        assert planted.json()["choices"][0]["message"]["content"] == _canaries().space.response(SECRET)
        said.pop()
    said.extend(record.getMessage() for record in caplog.records)
    text = "\n".join(said)
    assert "watermark" in text and "key_id" in text
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked"


def test_cli_keygen_and_a_malformed_key_file_for_serve(tmp_path):
    made = run_cli("defenses", "keygen", str(tmp_path / "k.yaml"), "--canaries", "3", "--gamma", "0.5")
    assert made.returncode == 0, made.stderr
    keys = load_keyfile(tmp_path / "k.yaml")
    assert keys.watermark is not None and keys.watermark.gamma == 0.5 and keys.canaries is not None
    assert len(keys.canaries.items) == 3 and (tmp_path / "k.yaml").stat().st_mode & 0o077 == 0
    assert keys.watermark.secret not in made.stdout + made.stderr
    again = run_cli("defenses", "keygen", str(tmp_path / "k.yaml"))
    assert again.returncode == 2 and "exists" in again.stderr
    bad = run_cli("defenses", "keygen", str(tmp_path / "b.yaml"), "--gamma", "1.5")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --gamma") and bad.stderr.count("\n") == 1
    (tmp_path / "bad.yaml").write_text("version: 1\nwatermark: {secret: short}\n")
    served = run_cli("serve", "builtin:tiny-teacher", "--port", "0", "--defenses", str(tmp_path / "bad.yaml"))
    assert served.returncode == 2 and served.stderr.count("\n") == 1
    assert "watermark.secret" in served.stderr and "short" not in served.stderr.replace("shorter", "")


# ------------------------------------------------------------------------------------------------ key files
@pytest.mark.parametrize(("text", "where"), [
    ("- a\n- b\n", "a mapping"),
    ("version: 1\nwatermark: {secret: 0123456789abcdef0123, gamma: 1.5}\n", "watermark.gamma"),
    ("version: 1\ncanaries: {items: [{trigger: t, secret: '12ab'}]}\n", "canaries"),
    ("version: 2\nwatermark: {secret: 0123456789abcdef0123}\n", "version"),
    ("version: 1\n", "names no defense"),
    ("version: 1\nwatermark: {secret: 0123456789abcdef0123, colour: green}\n", "watermark.colour"),
    ("version: 1\nwatermark: [unclosed\n", "not valid YAML"),
])
def test_load_keyfile_refuses_malformed_files_in_one_line(tmp_path, text, where):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError) as refused:
        load_keyfile(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and where in message
    assert "0123456789abcdef0123" not in message
    with pytest.raises(KeyFileError, match="cannot read"):
        load_keyfile(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------------ distill generate
def test_generate_records_the_public_view_and_a_key_hash_never_a_secret(tmp_path):
    from conftest import write_recipe
    from distill.errors import DataError
    from distill.generation.run import run_generation
    from distill.recipe.loading import load_generation_recipe

    keys = KeyFile(watermark=WatermarkKey(secret=WM_SECRET), canaries=_canaries(),
                   exposure=ExposureKey(temperature=0.7))
    write_keyfile(keys, tmp_path / "keys.yaml")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [*PROMPTS, TRIGGER]))
    spec = {"prompts": str(tmp_path / "prompts.jsonl"), "chat": False, "n": 1, "output": str(tmp_path / "out"),
            "sampling": {"max_new_tokens": 30, "seed": 1}, "defenses": str(tmp_path / "keys.yaml")}
    recipe = write_recipe(tmp_path / "gen.yaml", {"teacher": {"model": "builtin:tiny-teacher"}, "generate": spec})
    manifest = run_generation(load_generation_recipe(recipe), progress=False)
    record = {"public": load_keyfile(tmp_path / "keys.yaml").public_view(),
              "keyfile_sha256": keyfile_sha256(load_keyfile(tmp_path / "keys.yaml"))}
    assert manifest["defenses"] == record
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    written = "\n".join(p.read_text() for p in (tmp_path / "out").iterdir() if p.is_file())
    assert json.dumps(record["public"], sort_keys=True) in json.dumps(run, sort_keys=True)
    assert WM_SECRET not in written and SECRET not in written.replace(_canaries().space.response(SECRET), "")
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert rows[-1]["completion"] == _canaries().space.response(SECRET)  # the canary reached the training data
    assert all(r["sampling"]["temperature"] == 0.7 for r in rows)  # the forced temperature, recorded
    write_keyfile(KeyFile(watermark=WatermarkKey(secret=WM_SECRET + "x")), tmp_path / "keys.yaml")
    with pytest.raises(DataError):  # another key: another run, refused in the same folder
        run_generation(load_generation_recipe(recipe), progress=False)
