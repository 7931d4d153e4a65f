"""The run folder as a new user meets it: --overwrite deletes only a run distill wrote, one writer at a time, and
bad output folders, context lengths, batch sizes and precisions refused in one line before any training."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import REPO, base_recipe, run_cli, write_recipe
from distill.training.metrics import read_metrics


def _one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_overwrite_never_deletes_a_folder_distill_did_not_write(tmp_path, text_data, tiny_teacher_dir):
    """With `output_dir: .` a user's data, models and recipe were deleted by --overwrite."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text(text_data.read_text())
    (project / "models").mkdir()
    (project / "models" / "mine.bin").write_bytes(b"weights")
    recipe = write_recipe(project / "recipe.yaml", base_recipe(project / "data" / "train.jsonl", project))
    for flags in (["--overwrite"], []):
        result = run_cli("train", str(recipe), *flags)
        _one_line_error(result, "training.output_dir", "data, models")
    assert (project / "models" / "mine.bin").read_bytes() == b"weights"
    assert (project / "data" / "train.jsonl").exists() and recipe.exists()


def test_overwrite_starts_a_run_of_its_own_over(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    assert run_cli("train", str(path)).returncode == 0
    (tmp_path / "run" / "checkpoints" / "step-00000002" / "manifest.json").unlink()  # an old, broken checkpoint
    again = run_cli("train", str(path), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]


def test_a_second_training_into_the_same_folder_is_refused_naming_the_first(tmp_path, text_data, tiny_teacher_dir):
    """Both used to "succeed": the second run's student and recipe won and the first run's work was lost."""
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 400, "save_every": 1000})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    first = subprocess.Popen([sys.executable, "-m", "distill", "train", str(path)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None:
            if metrics.exists() and metrics.read_text().strip():
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        second = run_cli("train", str(path), "--overwrite")
        _one_line_error(second, "training.output_dir", "another distill process", f"pid {first.pid}")
        assert first.poll() is None  # untouched
    finally:
        first.kill()
        first.wait(timeout=60)
    # the kernel drops the lock of a killed process: the folder is usable at once
    resumed = run_cli("train", str(path), "--overwrite", "--set", "training.max_steps=2")
    assert resumed.returncode == 0, resumed.stderr


def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path, text_data, tiny_teacher_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for output_dir, phrase in ((blocker, "is a file"), (blocker / "run", "cannot write to")):
        path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, output_dir))
        _one_line_error(run_cli("train", str(path)), "training.output_dir", phrase)


def test_max_length_beyond_the_models_positions_is_refused_by_check_and_train(tmp_path, text_data, tiny_teacher_dir):
    recipe = base_recipe(text_data, tmp_path / "run")
    recipe["data"]["max_length"] = 4096  # the tiny teacher was built for 512 positions
    path = write_recipe(tmp_path / "r.yaml", recipe)
    check = run_cli("check", str(path))
    assert check.returncode == 2 and "data.max_length: 4096 is more than the 512 positions" in check.stderr
    _one_line_error(run_cli("train", str(path)), "data.max_length: 4096 is more than the 512 positions")


def test_a_batch_larger_than_the_data_is_refused_not_filled_with_repeats(tmp_path, tiny_teacher_dir):
    """A huge max_length packs a small corpus into one sequence; `check` said "ready" while every batch held it 4×."""
    data = tmp_path / "small.jsonl"
    data.write_text(json.dumps({"text": "anna had two apples and a pear."}) + "\n")
    path = write_recipe(tmp_path / "r.yaml", base_recipe(data, tmp_path / "run"))
    check = run_cli("check", str(path))
    assert check.returncode == 2 and "1 sequence(s) for a batch of training.batch_size 4" in check.stderr
    assert "ready" not in check.stdout
    _one_line_error(run_cli("train", str(path)), "training.batch_size 4")


def test_fp16_on_a_cpu_is_refused_not_silently_run_in_fp32(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run", training={"precision": "fp16"}))
    _one_line_error(run_cli("train", str(path)), "training.precision: fp16 needs a GPU")


def test_train_says_what_it_dropped_and_where_it_wrote(tmp_path, tiny_teacher_dir):
    data = tmp_path / "pc.jsonl"
    rows = [{"prompt": "a question " * 40, "completion": "lost"}] * 3 + [{"prompt": "q", "completion": "an answer"}] * 8
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = base_recipe(data, tmp_path / "run")
    recipe["data"] = {"train": str(data), "max_length": 32}
    result = run_cli("train", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.returncode == 0, result.stderr
    assert "8 sequences (prompt_completion)" in result.stdout
    assert "3 dropped (nothing left to learn at data.max_length 32)" in result.stdout
    assert f"student saved to {tmp_path / 'run' / 'student'}" in result.stdout


def test_saved_weights_follow_the_umask(tmp_path, text_data, tiny_teacher_dir):
    """safetensors writes 0600 whatever the umask; a run shared with a group could not be read."""
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    result = subprocess.run(["sh", "-c", f"umask 022 && {sys.executable} -m distill train {path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for file in [tmp_path / "run" / "student" / "model.safetensors",
                 *sorted((tmp_path / "run" / "checkpoints").glob("step-*/model.safetensors"))]:
        assert file.stat().st_mode & 0o777 == 0o644, (file, oct(file.stat().st_mode))
    assert (tmp_path / "run" / "student").stat().st_mode & 0o777 == 0o755


def _listing(folder):
    """Everything in the folder but the lock file a refused writer leaves (empty, and nobody's content)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".lock")


def test_names_a_run_writes_do_not_make_a_folder_a_run(tmp_path, text_data, tiny_teacher_dir):
    """A folder holding only another tool's tensorboard/, checkpoints/ or metrics.jsonl, or a user's own recipe.yaml,
    is not a distill run: refused, never cleared (with or without --overwrite)."""
    for name, make in (("tensorboard", lambda p: (p / "tensorboard" / "exp1").mkdir(parents=True)),
                       ("checkpoints", lambda p: (p / "checkpoints" / "epoch1").mkdir(parents=True)),
                       ("metrics.jsonl", lambda p: (p / "metrics.jsonl").write_text('{"step": 1}\n')),
                       ("recipe.yaml", lambda p: write_recipe(p / "recipe.yaml", base_recipe(text_data, p)))):
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        make(folder)
        before = _listing(folder)
        path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, folder))
        # --overwrite (the flag that deletes) for every name; without it once: the refusal is the same check
        for flags in ([], ["--overwrite"]) if name == "tensorboard" else (["--overwrite"],):
            _one_line_error(run_cli("train", str(path), *flags), "not a distill run", name)
        assert _listing(folder) == before


def test_resume_without_a_checkpoint_keeps_the_finished_student(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    assert run_cli("train", str(path)).returncode == 0
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints")  # to save space
    _one_line_error(run_cli("train", str(path), "--resume", "--set", "training.max_steps=6"),
                    "--resume", "no checkpoint to resume from")
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()


def test_overwrite_leaves_what_a_run_did_not_write(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run"))
    assert run_cli("train", str(path)).returncode == 0
    (tmp_path / "run" / "eval.json").write_text("{}")  # e.g. `distill eval --out run/eval.json`
    assert run_cli("train", str(path), "--overwrite").returncode == 0
    assert (tmp_path / "run" / "eval.json").read_text() == "{}"
