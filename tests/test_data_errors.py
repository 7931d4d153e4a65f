"""A new user's own data, run through the real CLI: records and files that cannot be used exit 2 with one `error:`
line naming the file and the line (or row, or .txt file), never a traceback; and text is never silently altered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import base_recipe, run_cli, write_recipe
from test_recipe_errors import assert_one_error

LATIN1_TEXT = "un café près de la forêt"


def chat(*turns: tuple[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def good_chat(i: int) -> dict[str, Any]:
    return chat(("user", f"what does anna have {i}?"), ("assistant", "two apples."))


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return path


def jsonl_with(records: dict[int, dict[str, Any]], fill: Callable[[int], dict[str, Any]], n: int = 6
               ) -> Callable[[Path], Path]:
    """A builder of a JSONL of `n` lines: `records[line]` (1-based) where given, `fill(i)` elsewhere."""

    def build(tmp_path: Path) -> Path:
        lines = [json.dumps(records.get(i + 1) or fill(i)) for i in range(n)]
        return write_lines(tmp_path / "mine.jsonl", lines)

    return build


def latin1_jsonl(tmp_path: Path) -> Path:
    """Every line but line 3 is plain ASCII; line 3 holds `é` as the single Latin-1 byte 0xE9."""
    lines = [json.dumps({"text": f"anna sees the cat and ben feeds a dog {i}."}) for i in range(24)]
    lines[2] = json.dumps({"text": LATIN1_TEXT}, ensure_ascii=False)
    return write_lines(tmp_path / "latin1.jsonl", lines, encoding="latin-1")


def latin1_text_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("anna sees the cat. " * 20, encoding="utf-8")
    (folder / "b.txt").write_bytes((LATIN1_TEXT + ". ") .encode("latin-1") * 20)
    return folder


@dataclass
class Case:
    build: Callable[[Path], Path]  # tmp_path -> the data file or folder
    expected: Callable[[Path], tuple[str, ...]]  # data path -> substrings of the error line
    data: dict[str, Any]  # updates to the recipe's data section
    verb: str = "check"


CHAT = {"format": "messages", "max_length": 64}
BAD_DATA = {
    "chat-int-content": Case(
        jsonl_with({2: chat(("user", 7), ("assistant", "seven."))}, good_chat),
        lambda p: (f"{p}, line 2", "messages[0].content is int"), CHAT),
    "chat-none-content": Case(
        jsonl_with({3: chat(("user", "hello"), ("assistant", None))}, good_chat),
        lambda p: (f"{p}, line 3", "messages[1].content is null"), CHAT, verb="train"),
    "chat-image-part": Case(
        jsonl_with({4: chat(("user", [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]),
                            ("assistant", "a cat."))}, good_chat),
        lambda p: (f"{p}, line 4", "image_url", "text"), CHAT),
    "latin1-jsonl": Case(
        latin1_jsonl, lambda p: (str(p), "line 3", "utf-8", "data.encoding", "iconv"), {}),
    "latin1-jsonl-train": Case(
        latin1_jsonl, lambda p: (str(p), "line 3", "data.encoding"), {}, verb="train"),
    "latin1-text-folder": Case(
        latin1_text_folder, lambda p: (str(p / "b.txt"), "utf-8", "data.encoding", "iconv"), {}),
    "text-field-missing-in-a-later-record": Case(
        jsonl_with({5: {"body": "no text here"}}, lambda i: {"text": f"anna sees the cat {i}."}),
        lambda p: ("data.text_field", f"{p}, line 5", "'text'"), {}),
    "completion-not-a-string": Case(
        jsonl_with({2: {"prompt": "two plus two?", "completion": 4}},
                   lambda i: {"prompt": f"q {i}?", "completion": " an answer."}),
        lambda p: (f"{p}, line 2", "'completion'"), {"format": "prompt_completion"}),
}


@pytest.mark.parametrize("case", list(BAD_DATA.values()), ids=list(BAD_DATA))
def test_unusable_data_is_one_error_line_naming_file_and_line(case: Case, tmp_path: Path,
                                                              tiny_teacher_dir: Path) -> None:
    data = case.build(tmp_path)
    recipe = base_recipe(data, tmp_path / "run")
    recipe["data"].update(case.data)
    assert_one_error(run_cli(case.verb, str(write_recipe(tmp_path / "recipe.yaml", recipe))), *case.expected(data))


def test_text_parts_are_joined_and_train(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    """OpenAI-style `[{"type": "text", "text": ...}]` content is plain text in pieces: it checks and trains."""
    parts = chat(("user", [{"type": "text", "text": "what does "}, {"type": "text", "text": "anna have?"}]),
                 ("assistant", [{"type": "text", "text": "two apples."}]))
    data = jsonl_with({1: parts, 3: parts}, good_chat)(tmp_path)
    recipe = base_recipe(data, tmp_path / "run")
    recipe["data"].update(CHAT)
    recipe["training"].update(max_steps=1, save_every=1)
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    checked = run_cli("check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "6 sequences (messages)" in checked.stdout
    trained = run_cli("train", str(path))
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "student").is_dir()


@pytest.mark.parametrize("build", [latin1_jsonl, latin1_text_folder], ids=["jsonl", "text-folder"])
def test_data_encoding_reads_latin1(build: Callable[[Path], Path], tmp_path: Path, tiny_teacher_dir: Path) -> None:
    data = build(tmp_path)
    path = write_recipe(tmp_path / "recipe.yaml", base_recipe(data, tmp_path / "run"))
    result = run_cli("check", str(path), "--set", "data.encoding=latin-1")
    assert result.returncode == 0, result.stderr
    assert "ok: the recipe is ready to train" in result.stdout
