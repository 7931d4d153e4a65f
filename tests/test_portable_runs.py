"""A run folder can move: its recipe.yaml holds absolute paths, a recipe read from a run folder trains into that
folder, and `--resume` of a moved run, from another working directory, continues it exactly where it stopped."""

from __future__ import annotations

import shutil

import yaml

from conftest import base_recipe, run_cli, write_recipe
from distill.recipe.portable import with_absolute_paths
from distill.training.metrics import read_metrics


def test_a_moved_run_resumes_from_another_directory(tmp_path, text_data, tiny_teacher_dir):
    start, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    shutil.copy(text_data, start / "stories.jsonl")
    recipe = base_recipe(start / "stories.jsonl", start / "run")
    recipe["data"]["train"] = "stories.jsonl"  # relative to where the run starts
    recipe["training"]["output_dir"] = "run"
    write_recipe(start / "recipe.yaml", recipe)
    first = run_cli("train", "recipe.yaml", cwd=start)
    assert first.returncode == 0, first.stderr
    saved = yaml.safe_load((start / "run" / "recipe.yaml").read_text())
    assert saved["data"]["train"] == str((start / "stories.jsonl").resolve())  # absolute in the run
    assert saved["teacher"]["model"] == "builtin:tiny-teacher"  # names no local file: left alone

    moved = tmp_path / "archive" / "moved-run"
    moved.parent.mkdir()
    shutil.move(start / "run", moved)
    resumed = run_cli("train", str(moved / "recipe.yaml"), "--resume", "--set", "training.max_steps=6",
                      cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and str(moved) in resumed.stdout
    assert [m["step"] for m in read_metrics(moved)] == [1, 2, 3, 4, 5, 6]
    assert not (elsewhere / "run").exists() and not (start / "run").exists()
    assert (moved / "student" / "model.safetensors").exists()


def test_the_original_recipe_still_resumes_its_run(tmp_path, text_data, tiny_teacher_dir):
    """Relative paths in the user's recipe and absolute ones in the run's compare equal on --resume."""
    project = tmp_path / "p"
    project.mkdir()
    shutil.copy(text_data, project / "stories.jsonl")
    recipe = base_recipe(project / "stories.jsonl", project / "run")
    recipe["data"]["train"] = "stories.jsonl"
    write_recipe(project / "recipe.yaml", recipe)
    assert run_cli("train", "recipe.yaml", cwd=project).returncode == 0
    again = run_cli("train", "recipe.yaml", "--resume", "--set", "training.max_steps=5", cwd=project)
    assert again.returncode == 0, again.stderr


def test_only_existing_local_paths_become_absolute(tmp_path):
    (tmp_path / "data.jsonl").write_text("{}\n")
    raw = {"data": {"train": "data.jsonl", "chat_template": "{{ messages }}",
                    "mixture": [{"path": "data.jsonl"}, {"path": "missing/*.jsonl"}, {"path": "*.jsonl"}]},
           "teacher": {"model": "HuggingFaceTB/SmolLM2-135M"}, "tokenizer": "builtin:tiny-teacher"}
    out = with_absolute_paths(raw, tmp_path)
    assert out["data"]["train"] == str(tmp_path / "data.jsonl") == out["data"]["mixture"][0]["path"]
    assert out["data"]["mixture"][1]["path"] == "missing/*.jsonl"  # matches nothing: left as given
    assert out["data"]["mixture"][2]["path"] == str(tmp_path / "*.jsonl")  # a glob that matches: anchored
    assert out["data"]["chat_template"] == "{{ messages }}" and out["tokenizer"] == "builtin:tiny-teacher"
    assert out["teacher"]["model"] == "HuggingFaceTB/SmolLM2-135M"
