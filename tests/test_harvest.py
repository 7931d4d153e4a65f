"""`distill cache` with an API teacher: the harvest over HTTP from a scoring server that answers with the tiny
teacher's true log-probs (tests/harvest_server.py) gives the cache a live build gives, refuses another tokenizer,
survives kill -9 with every example exactly once and nothing written asked again, never writes or prints the key,
and a student trains from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, base_recipe, kill_9_when, run_cli, write_recipe
from distill.builtin.corpus import tiny_stories
from distill.data.dataset import tokenize_data
from distill.errors import CacheError, RecipeError
from distill.models import load_tokenizer
from distill.recipe import validate_recipe
from distill.teachers.api.scoring import EchoScoring
from distill.teachers.cache.build import build_cache
from distill.teachers.cache.shard import read_index
from distill.teachers.cache.store import TeacherCache
from distill.training.loop import train
from distill.training.metrics import read_metrics
from harvest_server import MODEL, ScoringServer

KEY_ENV = "DISTILL_TEST_HARVEST_KEY"
KEY = "sk-harvest-SECRET-4b8e2d61c9"  # distinctive: grep-able in any file or output
K = 8


@pytest.fixture(scope="module")
def server(tiny_teacher_dir: Path) -> ScoringServer:
    return ScoringServer(tiny_teacher_dir, key=KEY)


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)  # subprocesses inherit it through os.environ


def api_recipe(data: Path, run: Path, base_url: str, teacher_dir: Path, **teacher) -> dict:
    """A recipe whose teacher is the API (no local teacher model: the tokenizer is the student's)."""
    recipe = base_recipe(data, run, objective={"alpha": 0.5, "temperature": 1.0})
    recipe["teacher"] = {"api": {"base_url": base_url, "model": MODEL, "api_key_env": KEY_ENV, "max_concurrency": 8},
                         "top_k": K, "capture_temperature": 1.0, **teacher}
    recipe["student"] = {"model": str(teacher_dir)}
    return recipe


def live_recipe(data: Path, run: Path) -> dict:
    recipe = base_recipe(data, run, objective={"alpha": 0.5, "temperature": 1.0})
    recipe["teacher"].update(top_k=K, capture_temperature=1.0)
    return recipe


def journal(cache: Path) -> np.ndarray:
    return np.concatenate([read_index(p) for p in sorted(cache.glob("shard-*.idx"))])


def assert_same_signal(harvested: Path, live: Path, atol: float) -> None:
    """Every example: the same top-k ids, and log-probs and tails within `atol` (id by id)."""
    a, b = TeacherCache.open(harvested), TeacherCache.open(live)
    n = a.manifest["setup"]["data"]["n_examples"]
    assert n == b.manifest["setup"]["data"]["n_examples"] and a.manifest["n_tokens"] == b.manifest["n_tokens"]
    worst = 0.0
    for example in range(n):
        x, y = a.read(example), b.read(example)
        ox, oy = np.argsort(x.ids, axis=1), np.argsort(y.ids, axis=1)
        assert np.array_equal(np.take_along_axis(x.ids, ox, 1), np.take_along_axis(y.ids, oy, 1)), example
        diff = np.abs(np.take_along_axis(x.logprobs, ox, 1) - np.take_along_axis(y.logprobs, oy, 1)).max()
        worst = max(worst, float(diff))
        # the API's tail is 1 − Σ top-k, the live one a logsumexp over the rest: equal where fp32 resolves it
        resolved = y.tail > -10
        np.testing.assert_allclose(x.tail[resolved], y.tail[resolved], atol=max(atol, 1e-3))
    assert worst <= atol, worst


def test_a_harvest_stores_what_a_live_build_of_the_same_teacher_stores(tmp_path, text_data, tiny_teacher_dir,
                                                                     server):
    with server.running() as url:
        for encoding in ("exact", "q8"):
            before = server.requests
            manifest = build_cache(validate_recipe(api_recipe(text_data, tmp_path / "r", url, tiny_teacher_dir)),
                                   tmp_path / f"api-{encoding}", encoding=encoding, shard_tokens=400)
            assert server.requests - before == manifest["n_examples"]  # one request per example, none twice
            build_cache(validate_recipe(live_recipe(text_data, tmp_path / "r")), tmp_path / f"live-{encoding}",
                        encoding=encoding, shard_tokens=400)
    # the exact encoding stores float32: within 1e-4 of the live teacher; q8 quantises both the same way, so a value
    # may fall on the other side of a 1/32-nat step
    assert_same_signal(tmp_path / "api-exact", tmp_path / "live-exact", atol=1e-4)
    assert_same_signal(tmp_path / "api-q8", tmp_path / "live-q8", atol=1 / 32 + 1e-4)
    teacher = manifest["setup"]["teacher"]
    assert teacher["source"] == f"api:{MODEL}" and teacher["api"]["base_url"] == url
    assert teacher["api"]["served"] == {"id": MODEL, "object": "model", "owned_by": "tests", "root": "tiny-teacher"}
    assert manifest["k"] == K and manifest["capture_temperature"] == 1.0 and 0.5 < manifest["captured_mass_mean"] < 1


def test_sequences_whose_text_does_not_tokenize_back_are_sent_as_token_ids(tmp_path, tiny_teacher_dir, server):
    """A prompt and completion tokenized apart ("the happy f" + "ox walks" is not how "the happy fox walks" splits)
    do not come back from their joint text: those are sent as ids, and still match the live teacher."""
    data = tmp_path / "pc.jsonl"
    cuts = [("the happy f", "ox walks to the hill"), ("the fox walk", "s to the hill")]  # apart / as one
    records = [{"prompt": f"Story {i}: {cuts[i % 2][0]}", "completion": f"{cuts[i % 2][1]} {i} times."}
               for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = load_tokenizer("t", str(tiny_teacher_dir), None, False)
    live = live_recipe(data, tmp_path / "r")
    live["data"]["format"] = "prompt_completion"
    examples = tokenize_data(validate_recipe(live).data, tokenizer).examples
    prompts = [EchoScoring(MODEL, tokenizer, K).prompt(e.input_ids) for e in examples]
    assert any(isinstance(p, list) for p in prompts) and any(isinstance(p, str) for p in prompts)
    with server.running() as url:
        recipe = api_recipe(data, tmp_path / "r", url, tiny_teacher_dir)
        recipe["data"]["format"] = "prompt_completion"
        before = server.requests
        build_cache(validate_recipe(recipe), tmp_path / "api", encoding="exact")
        assert server.requests - before == len(examples)
    build_cache(validate_recipe(live), tmp_path / "live", encoding="exact")
    assert_same_signal(tmp_path / "api", tmp_path / "live", atol=1e-4)


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(tmp_path, text_data, tiny_teacher_dir):
    foreign = ScoringServer(tiny_teacher_dir, split_chars=True)
    with foreign.running() as url:
        path = write_recipe(tmp_path / "r.yaml", api_recipe(text_data, tmp_path / "r", url, tiny_teacher_dir))
        result = run_cli("cache", str(path), "--out", str(tmp_path / "cache"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "the teacher's tokenizer differs from ours: in example 0, at position 0 the API's token 'd'" in line
    assert "distill generate" in line  # what to do instead
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_the_recipe_rules_of_an_api_teacher(tmp_path, text_data, tiny_teacher_dir, server):
    url = "http://127.0.0.1:1"
    recipe = api_recipe(text_data, tmp_path / "r", url, tiny_teacher_dir, capture_temperature=None)
    recipe["objective"]["temperature"] = 2.0
    with pytest.raises(RecipeError, match=r"teacher\.capture_temperature: must be 1 with teacher\.api, .*\(it is 2, "
                                          "from objective.temperature"):
        validate_recipe(recipe)
    recipe = api_recipe(text_data, tmp_path / "r", url, tiny_teacher_dir)
    recipe["student"] = {"from_teacher": {"layers": [0, 1]}}
    with pytest.raises(RecipeError, match=r"teacher\.model: required by student\.from_teacher"):
        validate_recipe(recipe)
    recipe["teacher"] = {"top_k": K}
    with pytest.raises(RecipeError, match=r"teacher: set `model` .*`cache` .*`api` "):
        validate_recipe(recipe)
    # training never calls the API: without a harvested cache it is refused before any work, in train and check
    path = write_recipe(tmp_path / "r.yaml", api_recipe(text_data, tmp_path / "run", url, tiny_teacher_dir))
    for command in ("train", "check"):
        result = run_cli(command, str(path))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "teacher.cache: training reads an API teacher's signal from a cache" in result.stderr
        assert "harvest it first with `distill cache RECIPE --out DIR`" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "student").exists()
    # a server that refuses N log-probs: one line, naming teacher.top_k
    with server.running() as live_url:
        path = write_recipe(tmp_path / "k.yaml", api_recipe(text_data, tmp_path / "r", live_url, tiny_teacher_dir,
                                                            top_k=32))
        result = run_cli("cache", str(path), "--out", str(tmp_path / "k"))
    assert result.returncode == 2 and "greater than max allowed: 20" in result.stderr
    assert "logprobs: 32 (teacher.top_k; many servers allow at most 20)" in result.stderr


def test_training_checks_that_the_cache_was_harvested_from_the_recipes_api_model(tmp_path, text_data,
                                                                                 tiny_teacher_dir, server):
    """The cache's teacher is `api:MODEL`: a recipe naming another API model is refused, one naming the same model
    trains — with `teacher.model` loaded for `student.from_teacher` too (its weights are not the API's identity)."""
    with server.running() as url:
        build_cache(validate_recipe(api_recipe(text_data, tmp_path / "r", url, tiny_teacher_dir)), tmp_path / "cache")
    cache = str(tmp_path / "cache")
    other = api_recipe(text_data, tmp_path / "other", "http://127.0.0.1:1", tiny_teacher_dir, cache=cache)
    other["teacher"]["api"]["model"] = "another"
    with pytest.raises(CacheError, match=r"teacher\.model: 'api:tiny' in the cache, 'api:another' in the recipe"):
        train(validate_recipe(other))
    same = api_recipe(text_data, tmp_path / "same", "http://127.0.0.1:2", tiny_teacher_dir, cache=cache,
                      model="builtin:tiny-teacher")  # the server moved; the layers come from a local copy
    same["student"] = {"from_teacher": {"layers": [0, 3]}}
    train(validate_recipe(same))
    assert all(m["kd"] > 0 for m in read_metrics(tmp_path / "same"))


def test_kill_9_mid_harvest_resumes_with_every_example_once_and_nothing_written_asked_again(tmp_path,
                                                                                           tiny_teacher_dir):
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_stories(800, seed=5)))
    slow = ScoringServer(tiny_teacher_dir, key=KEY, delay_s=0.005)
    with slow.running() as url:
        path = write_recipe(tmp_path / "r.yaml", api_recipe(data, tmp_path / "run", url, tiny_teacher_dir))
        args = ["cache", str(path), "--shard-tokens", "1000"]
        killed = tmp_path / "killed"
        kill_9_when(lambda: len(list(killed.glob("shard-*.json"))) >= 1 and len(journal(killed)) > 150, *args,
                    "--out", str(killed))
        assert not (killed / "manifest.json").exists() and (killed / "build.json").exists()
        with pytest.raises(CacheError, match="incomplete"):
            TeacherCache.open(killed)

        # what the resumed run asks for: exactly the examples the journals lack (read as the next run will read them)
        recipe = validate_recipe(api_recipe(data, tmp_path / "run", url, tiny_teacher_dir))
        tokenizer = load_tokenizer("t", str(tiny_teacher_dir), None, False)
        examples = tokenize_data(recipe.data, tokenizer).examples
        scoring = EchoScoring(MODEL, tokenizer, K)
        written = set(_recovered_journal(killed))
        missing = [e for e in range(len(examples)) if e not in written]
        assert 0 < len(missing) < len(examples) - 150
        _wait_until_idle(slow)  # the killed client's requests still queued on the server finish (and count) first
        slow.prompts.clear()
        resumed = run_cli(*args, "--out", str(killed))
        assert resumed.returncode == 0, resumed.stderr
        assert slow.prompts == Counter(json.dumps(scoring.prompt(examples[e].input_ids)) for e in missing)

        slow.delay_s = 0.0
        build_cache(recipe, tmp_path / "straight", shard_tokens=1000)
    rows = journal(killed)
    assert sorted(rows["example"].tolist()) == list(range(len(examples)))  # each exactly once, none missing
    a = json.loads((killed / "manifest.json").read_text())
    b = json.loads((tmp_path / "straight" / "manifest.json").read_text())
    # written in example order whatever the order answers came in: the very same bytes as an uninterrupted harvest
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert [s["index_sha256"] for s in a["shards"]] == [s["index_sha256"] for s in b["shards"]]


def _wait_until_idle(server: ScoringServer, quiet_s: float = 0.5, limit_s: float = 30.0) -> None:
    """Until the server has scored nothing new for `quiet_s`: requests a killed client sent before dying are still
    answered (one forward pass at a time) and would be counted as the resumed run's."""
    deadline, last, since = time.monotonic() + limit_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        count = server.requests
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError("the scoring server kept answering for 30 s after the harvest was killed")


def _recovered_journal(cache: Path) -> list[int]:
    """The examples whose records a resumed run keeps: the journal rows that tile their data file (shard.py)."""
    from distill.teachers.cache.shard import ShardWriter

    kept = []
    for idx in sorted(cache.glob("shard-*.idx")):
        writer = ShardWriter(cache, int(idx.stem.split("-")[1]))
        writer.close()
        kept += sorted(writer.done)
    return kept


def test_a_student_trains_from_a_harvest_and_the_key_is_written_and_printed_nowhere(tmp_path, text_data,
                                                                                   tiny_teacher_dir, server):
    outputs = []
    with server.running() as url:
        recipe = api_recipe(text_data, tmp_path / "run", url, tiny_teacher_dir, cache=str(tmp_path / "cache"))
        path = write_recipe(tmp_path / "r.yaml", recipe)
        harvested = run_cli("cache", str(path))  # into teacher.cache
        outputs.append(harvested)
        assert harvested.returncode == 0, harvested.stderr
        outputs.append(run_cli("cache", str(path)))  # complete: nothing to do
        assert "nothing to do" in outputs[-1].stdout
        # a server that echoes a wrong key back in its error, and one that is down: the messages hold no key
        wrong = write_recipe(tmp_path / "w.yaml", recipe)
        outputs.append(run_cli("cache", str(wrong), "--out", str(tmp_path / "w"), env={KEY_ENV: KEY + "x"}))
        assert outputs[-1].returncode == 2 and "was refused" in outputs[-1].stderr
    outputs.append(run_cli("cache", str(path), "--out", str(tmp_path / "down")))
    assert outputs[-1].returncode == 2 and "check that the server is running" in outputs[-1].stderr

    trained = run_cli("train", str(path))  # reads teacher.cache; the API is gone and not needed
    outputs.append(trained)
    assert trained.returncode == 0, trained.stderr
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 4 and all(0.5 < m["teacher_mass"] < 1.0 and m["kd"] > 0 for m in metrics)
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()

    secret = KEY.encode()
    files = [p for root in (tmp_path / "cache", tmp_path / "run", tmp_path / "w", tmp_path / "down")
             for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.suffix == ".yaml" for p in files)  # the run's recipe copy among them
    assert [p for p in files if secret in p.read_bytes()] == []
    assert KEY_ENV.encode() in (tmp_path / "run" / "recipe.yaml").read_bytes()  # the variable's name is fine
    for result in outputs:
        assert KEY not in result.stdout and KEY not in result.stderr


def test_distill_serve_end_to_end_harvest_killed_resumed_and_trained_from(tmp_path, tiny_teacher_dir):
    """The real server (`distill serve`, in a subprocess on a free port, with a key) as the teacher: a harvest with 8
    requests in flight is killed with kill -9 in the middle, resumed, holds every example exactly once, and a
    student trains from it."""
    serve = subprocess.Popen([sys.executable, "-m", "distill", "serve", str(tiny_teacher_dir), "--port", "0",
                              "--model-name", MODEL, "--api-key-env", KEY_ENV, "--log-level", "warning"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        url = _served_url(serve, lines)
        data = tmp_path / "big.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_stories(600, seed=7)))
        recipe = api_recipe(data, tmp_path / "run", url, tiny_teacher_dir, cache=str(tmp_path / "cache"))
        path = write_recipe(tmp_path / "r.yaml", recipe)
        args = ["cache", str(path), "--shard-tokens", "1000"]
        cache = tmp_path / "cache"
        kill_9_when(lambda: len(list(cache.glob("shard-*.json"))) >= 1 and len(journal(cache)) > 100, *args,
                    timeout=300)
        assert not (cache / "manifest.json").exists()
        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        trained = run_cli("train", str(path))
        assert trained.returncode == 0, trained.stderr
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=60)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert sorted(journal(cache)["example"].tolist()) == list(range(manifest["setup"]["data"]["n_examples"]))
    assert manifest["setup"]["teacher"]["api"]["served"]["id"] == MODEL
    assert 0.5 < manifest["captured_mass_mean"] < 1.0
    assert all(m["kd"] > 0 for m in read_metrics(tmp_path / "run"))
    for output in (resumed.stdout, resumed.stderr, trained.stdout, trained.stderr, *lines):
        assert KEY not in output


def _served_url(serve: subprocess.Popen, lines: list[str]) -> str:
    """The URL `distill serve` prints once it listens (its output is drained into `lines` from then on)."""
    import re
    import threading

    assert serve.stdout is not None
    deadline = time.time() + 240
    while time.time() < deadline:
        line = serve.stdout.readline()
        if not line:
            pytest.fail("`distill serve` exited: " + "".join(lines))
        lines.append(line)
        found = re.search(r"serving .* at (http://\S+)/v1", line)
        if found:
            threading.Thread(target=lambda: lines.extend(serve.stdout), daemon=True).start()
            return found.group(1)
    pytest.fail("`distill serve` did not start within 240 s: " + "".join(lines))
