"""`distill generate` through the OpenAI-compatible backend, against `distill serve` run as a user runs it (a
subprocess on a loopback port, with an API key): killed with SIGKILL in the middle and run again, every (prompt,
sample) is in the output exactly once, the rows equal an uninterrupted generation's (the server honours each
request's seed), and the key appears in no file and no output."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import REPO, kill_9_when, run_cli, write_recipe

KEY_ENV = "DISTILL_TEST_GENERATE_KEY"
KEY = "sk-generate-SECRET-5e1d7a93c2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_teacher_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, KEY_ENV: KEY}
    process = subprocess.Popen([sys.executable, "-m", "distill", "serve", "builtin:tiny-teacher", "--port", str(port),
                                "--api-key-env", KEY_ENV, "--model-name", "tiny", "--max-batch-size", "8"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else "server died"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _recipe(tmp_path: Path, url: str, output: Path) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Once upon a time {i}"}) + "\n" for i in range(30)))
    return write_recipe(tmp_path / f"{output.name}.yaml", {
        "teacher": {"api": {"base_url": url, "model": "tiny", "api_key_env": KEY_ENV, "max_concurrency": 8}},
        "generate": {"prompts": str(prompts), "chat": False, "n": 2, "output": str(output),
                     "sampling": {"temperature": 1.0, "max_new_tokens": 24, "seed": 2},
                     "verifier": {"kind": "regex", "pattern": "owl|cat"}}})


def test_killed_api_generation_resumes_with_every_sample_once(tmp_path, served):
    whole = run_cli("generate", str(_recipe(tmp_path, served, tmp_path / "whole")), env={KEY_ENV: KEY})
    assert whole.returncode == 0, whole.stderr
    recipe = _recipe(tmp_path, served, tmp_path / "out")
    journal = tmp_path / "out" / "journal.jsonl"
    killed_err = kill_9_when(lambda: journal.exists() and len(journal.read_text().splitlines()) >= 8, "generate",
                             str(recipe), env={KEY_ENV: KEY})
    assert 8 <= len(journal.read_text().splitlines()) < 60
    again = run_cli("generate", str(recipe), env={KEY_ENV: KEY})
    assert again.returncode == 0, again.stderr
    keys = [(r["prompt_id"], r["sample"]) for r in map(json.loads, journal.read_text().splitlines())]
    assert sorted(keys) == [(p, s) for p in range(30) for s in range(2)]  # exactly once: no gap, no duplicate
    for name in ("samples.jsonl", "train.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["teacher"] == {"api": served, "model": "tiny"}
    # the key is nowhere: not in a file the runs wrote, not in anything they printed
    outputs = [whole.stdout, whole.stderr, again.stdout, again.stderr, killed_err]
    assert not [text for text in outputs if KEY in text]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if KEY.encode() in p.read_bytes()]
