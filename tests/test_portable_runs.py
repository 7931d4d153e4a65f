"""A run folder can move: its recipe.yaml holds absolute paths, a recipe read from a run folder trains into that
folder, and `--resume` of a moved run, from another working directory, continues it exactly where it stopped.
(In-process, with the working directory changed as a user's shell would.)"""

from __future__ import annotations

import shutil

import yaml

from conftest import base_recipe, write_recipe
from distill.recipe import load_recipe
from distill.recipe.portable import with_absolute_paths
from distill.training.loop import train
from distill.training.metrics import read_metrics


def test_a_moved_run_resumes_from_another_directory(tmp_path, text_data, tiny_teacher_dir, monkeypatch, capsys):
    start, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    shutil.copy(text_data, start / "stories.jsonl")
    recipe = base_recipe(start / "stories.jsonl", start / "run")
    recipe["data"]["train"] = "stories.jsonl"  # relative to where the run starts
    recipe["training"]["output_dir"] = "run"
    write_recipe(start / "recipe.yaml", recipe)
    monkeypatch.chdir(start)
    train(load_recipe("recipe.yaml"))
    saved = yaml.safe_load((start / "run" / "recipe.yaml").read_text())
    assert saved["data"]["train"] == str((start / "stories.jsonl").resolve())  # absolute in the run
    assert saved["teacher"]["model"] == "builtin:tiny-teacher"  # names no local file: left alone

    moved = tmp_path / "archive" / "moved-run"
    moved.parent.mkdir()
    shutil.move(start / "run", moved)
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    train(load_recipe(moved / "recipe.yaml", ["training.max_steps=6"]), resume=True)
    assert "resuming from" in capsys.readouterr().out
    assert [m["step"] for m in read_metrics(moved)] == [1, 2, 3, 4, 5, 6]
    assert not (elsewhere / "run").exists() and not (start / "run").exists()
    assert (moved / "student" / "model.safetensors").exists()


def test_the_original_recipe_still_resumes_its_run(tmp_path, text_data, tiny_teacher_dir, monkeypatch):
    """Relative paths in the user's recipe and absolute ones in the run's compare equal on --resume."""
    project = tmp_path / "p"
    project.mkdir()
    shutil.copy(text_data, project / "stories.jsonl")
    recipe = base_recipe(project / "stories.jsonl", project / "run")
    recipe["data"]["train"] = "stories.jsonl"
    write_recipe(project / "recipe.yaml", recipe)
    monkeypatch.chdir(project)
    train(load_recipe("recipe.yaml"))
    train(load_recipe("recipe.yaml", ["training.max_steps=5"]), resume=True)
    assert [m["step"] for m in read_metrics(project / "run")] == [1, 2, 3, 4, 5]


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
