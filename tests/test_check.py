"""`distill check`: a good recipe passes; tokenizer mismatches, missing chat templates and empty data are reported,
all of them at once, each on its own `error:` line, with exit code 2 and no traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import base_recipe, run_cli, write_recipe

CHAT = [
    {"messages": [{"role": "user", "content": f"Tell me story {i}."},
                  {"role": "assistant", "content": f"Once upon a time there was a cat named {i}."}]}
    for i in range(8)
]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), shown
    return lines


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def other_vocab_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved with its own tokenizer, trained on text unlike the teacher's; its model is wide enough for
    the teacher's tokenizer, so the only problem is the vocabulary."""
    import torch
    from transformers import LlamaForCausalLM

    from distill.builtin.tiny_models import tiny_llama_config
    from distill.builtin.tokenizer import train_bpe_tokenizer

    words = ["quantum", "invoice", "turbine", "lattice", "gradient", "harbour", "velvet", "zenith", "1234", "5678"]
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(300)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(512, layers=2))
    folder = tmp_path_factory.mktemp("other-vocab-student")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_without_chat_template(tiny_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny teacher, saved again with its tokenizer's chat template removed."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("no-chat-template")
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    LlamaForCausalLM.from_pretrained(tiny_teacher_dir).save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    assert AutoTokenizer.from_pretrained(folder).chat_template is None
    return folder


def test_tiny_recipe_passes(tmp_path: Path, text_data: Path, tiny_teacher_dir: Path) -> None:
    path = write_recipe(tmp_path / "recipe.yaml", base_recipe(text_data, tmp_path / "run"))
    result = run_cli("check", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "ok" in result.stdout
    assert "4 layers" in result.stdout and "teacher layers [0, 3]" in result.stdout
    assert not (tmp_path / "run").exists()  # check writes nothing


def test_example_recipe_passes(tiny_teacher_dir: Path) -> None:
    result = run_cli("check", "examples/recipes/tiny.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_student_with_another_tokenizer(tmp_path: Path, text_data: Path, tiny_teacher_dir: Path,
                                        other_vocab_student: Path) -> None:
    recipe = base_recipe(text_data, tmp_path / "run")
    recipe["student"] = {"model": str(other_vocab_student)}
    result = run_cli("check", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
    [line] = error_lines(result)
    assert "student.model" in line and "tokenizer differs from the teacher's" in line


def test_chat_data_needs_a_chat_template(tmp_path: Path, teacher_without_chat_template: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    recipe = base_recipe(data, tmp_path / "run", teacher={"model": str(teacher_without_chat_template)})
    recipe["data"]["format"] = "messages"
    result = run_cli("check", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
    [line] = error_lines(result)
    assert "chat template" in line and "data.format" in line


def test_chat_data_with_a_chat_template_passes(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    """The control for the test above: the same data with the teacher's own (ChatML) tokenizer is fine."""
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    recipe = base_recipe(data, tmp_path / "run")
    recipe["data"]["format"] = "auto"
    result = run_cli("check", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(messages)" in result.stdout


def test_empty_data_file(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    recipe = base_recipe(data, tmp_path / "run")
    result = run_cli("check", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
    [line] = error_lines(result)
    assert "data.train" in line and "no records" in line


def test_several_problems_are_reported_together(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n")
    recipe = base_recipe(data, tmp_path / "run")
    recipe["student"]["from_teacher"]["layers"] = [0, 5, 9]
    result = run_cli("check", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
    lines = error_lines(result)
    assert len(lines) == 2, result.stderr
    assert any("student.from_teacher.layers" in line and "[5, 9]" in line for line in lines), result.stderr
    assert any("data.train" in line and "no records" in line for line in lines), result.stderr


def test_check_splits_the_batch_over_the_processes_it_is_told(tmp_path: Path, text_data: Path,
                                                                tiny_teacher_dir: Path) -> None:
    """A recipe fine on one process can fail on two (batch 4 = micro 4 × 1 process, not × 2); check said "ready"."""
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    assert run_cli("check", str(path), "--num-processes", "1").returncode == 0
    two = run_cli("check", str(path), "--num-processes", "2")
    assert two.returncode == 2 and "micro_batch_size × processes (4 × 2)" in two.stderr
    assert "ready" not in two.stdout
