"""The token store: tokenized data written once and memory-mapped, equal to tokenizing in memory, keyed so that a
changed file, tokenizer or setting is never served a stale store, and safe when two writers race."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.data.dataset import tokenize_data
from distill.data.formatting import Example
from distill.data.token_store import TokenStore, store_root, write_store
from distill.recipe import DataConfig


def _examples(data) -> list[tuple]:
    return [(e.input_ids, e.labels, e.position_ids) for e in data.examples]


@pytest.mark.parametrize("settings", [{"format": "text"}, {"format": "text", "reset_attention": True},
                                      {"format": "text", "packing": False}, {"format": "messages"}])
def test_the_store_serves_exactly_what_tokenizing_in_memory_gives(tmp_path, tiny_tokenizer, settings):
    path = tmp_path / "train.jsonl"
    if settings["format"] == "messages":
        rows = [{"messages": [{"role": "user", "content": f"what is {i} plus {i}?"},
                              {"role": "assistant", "content": f"{2 * i}"}]} for i in range(30)]
    else:
        rows = [{"text": f"story number {i} is about a cat who sat on mat {i * 7}."} for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(train=str(path), max_length=24 if settings["format"] == "text" else 256, **settings)
    memory = tokenize_data(cfg.model_copy(update={"token_cache": False}), tiny_tokenizer)
    first = tokenize_data(cfg, tiny_tokenizer)  # writes the store
    second = tokenize_data(cfg, tiny_tokenizer)  # reads it
    for data in (first, second):
        assert isinstance(data.examples, TokenStore) and isinstance(data.examples.ids, np.memmap)
        assert _examples(data) == _examples(memory)
        assert (data.format, data.dropped, data.n_targets) == (memory.format, memory.dropped, memory.n_targets)
    assert first.examples.root == second.examples.root


def test_a_changed_file_tokenizer_setting_is_a_new_store(tmp_path, tiny_tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"line {i} of the first version."}) + "\n" for i in range(40)))
    cfg = DataConfig(train=str(path), max_length=16)
    before = tokenize_data(cfg, tiny_tokenizer)
    path.write_text("".join(json.dumps({"text": f"line {i} of the second, longer version."}) + "\n"
                            for i in range(40)))
    after = tokenize_data(cfg, tiny_tokenizer)
    assert after.examples.root != before.examples.root
    assert _examples(after) == _examples(tokenize_data(cfg.model_copy(update={"token_cache": False}), tiny_tokenizer))
    shorter = tokenize_data(cfg.model_copy(update={"max_length": 12}), tiny_tokenizer)
    assert shorter.examples.root not in (before.examples.root, after.examples.root)
    assert len(list(store_root().glob(".*"))) == 0  # no temporary folders left behind


def test_a_second_writer_keeps_the_finished_store(tmp_path):
    root = tmp_path / "tokens" / "key"
    write_store(root, [Example([1, 2, 3], [1, 2, 3])], {"data_format": "text", "dropped": 0, "train": "a"})
    write_store(root, [Example([9, 9], [9, 9])], {"data_format": "text", "dropped": 0, "train": "b"})  # lost race
    store = TokenStore(root)
    assert len(store) == 1 and store[0].input_ids == [1, 2, 3] and store.meta["train"] == "a"
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == ["key"]


def test_a_dead_writers_temporary_folder_is_cleared_and_a_live_ones_kept(tmp_path):
    import os
    import time

    root = tmp_path / "tokens" / "key"
    root.parent.mkdir(parents=True)
    dead, live = root.parent / ".key-dead", root.parent / ".key-live"
    dead.mkdir()
    live.mkdir()
    old = time.time() - 2 * 24 * 3600
    os.utime(dead, (old, old))
    write_store(root, [Example([1, 2], [1, 2])], {"data_format": "text", "dropped": 0, "train": "a"})
    assert not dead.exists() and live.exists() and TokenStore(root)[0].input_ids == [1, 2]


def test_a_long_build_keeps_its_temporary_folder_young(tmp_path, monkeypatch):
    """A streamed first build can outlast STALE_S; it touches its folder as it writes, so another process building
    the same store never takes it for a dead writer's. Time is simulated: each clock reading advances a minute."""
    import os
    import time

    import distill.data.token_store as token_store

    clock = iter(range(0, 10**6, 61))
    monkeypatch.setattr(token_store.time, "monotonic", lambda: next(clock))
    root = tmp_path / "tokens" / "key"
    old = time.time() - 2 * 24 * 3600
    seen = []

    def examples():
        for i in range(4):
            (folder,) = root.parent.glob(".key-*")
            if i == 1:
                os.utime(folder, (old, old))  # as if the build had run for two days so far
            seen.append(folder.stat().st_mtime)
            yield Example([i, i], [i, i])

    write_store(root, examples(), {"data_format": "text", "dropped": 0, "train": "a"}, segmented=False)
    assert seen[1] == old and seen[2] > old + 24 * 3600 and len(TokenStore(root)) == 4


def test_a_source_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    """A start with a held-out fraction keys two stores by the same source: its bytes are read once."""
    import os
    from pathlib import Path

    from distill.data.token_store import source_sha256

    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "one"}\n')
    os.utime(path, (1, 1))  # an old file: a fresh one is hashed on every call (its timestamp could still tick)
    opened: list[Path] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: (  # reads only, not the writes below
        opened.append(self) if mode == "rb" else None) or real_open(self, mode, *a, **k))
    first = source_sha256(str(path))
    assert source_sha256(str(path)) == first and opened == [path]
    path.write_text('{"text": "two, longer"}\n')
    assert source_sha256(str(path)) != first and opened == [path, path]
    assert source_sha256(str(path)) != first and opened == [path, path, path]  # just written: never memoised
