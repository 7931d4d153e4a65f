"""Two processes on the CPU, launched the way the README says, train exactly like one process with the same global
batch: same examples per step, loss normalised over the global token count, DDP averaging compensated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import REPO, accelerate_launch, base_recipe, run_cli, write_recipe
from distill.training.metrics import read_metrics


def test_two_processes_follow_the_one_process_trajectory(tmp_path, text_data, tiny_teacher_dir):
    recipe = base_recipe(text_data, tmp_path / "one", training={
        "max_steps": 6, "batch_size": 8, "micro_batch_size": 2, "save_every": 3})
    recipe["data"].update({"packing": False, "max_length": 48})  # unequal token counts per sequence
    path = write_recipe(tmp_path / "r.yaml", recipe)

    one = run_cli("train", str(path))
    assert one.returncode == 0, one.stderr
    two = accelerate_launch(2, "train", str(path), "--set", f"training.output_dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr

    # both processes really ran: each wrote its RNG state into the checkpoint
    checkpoint = tmp_path / "two" / "checkpoints" / "step-00000006"
    assert sorted(p.name for p in checkpoint.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    assert sorted(p.name for p in (tmp_path / "one" / "checkpoints" / "step-00000006").glob("rng-*.pt")) == [
        "rng-0.pt"]

    loss_one = [m["loss"] for m in read_metrics(tmp_path / "one")]
    loss_two = [m["loss"] for m in read_metrics(tmp_path / "two")]
    assert len(loss_one) == len(loss_two) == 6
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    a = load_file(tmp_path / "one" / "student" / "model.safetensors")
    b = load_file(tmp_path / "two" / "student" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_bad_recipe_under_two_processes_is_reported_once(tmp_path, text_data):
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, tmp_path / "run", training={"lrr": 1}))
    result = accelerate_launch(2, "train", str(path))
    assert result.returncode != 0
    assert result.stderr.count("training.lrr: unknown key") == 1


def test_a_process_count_set_in_the_accelerate_config_is_honoured(tmp_path, text_data, tiny_teacher_dir):
    """`accelerate config` with 2 CPU processes, then `accelerate launch` without --num_processes: accelerate starts
    one process, and training used to run on it alone without a word."""
    config = tmp_path / "accelerate.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nnum_processes: 2\n"
                      "num_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n")
    recipe = base_recipe(text_data, tmp_path / "run", training={"max_steps": 2, "batch_size": 4,
                                                                "micro_batch_size": 2})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    accelerate = Path(sys.executable).with_name("accelerate")
    result = subprocess.run([str(accelerate), "launch", "--config_file", str(config), "-m", "distill", "train",
                             str(path)], capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "MASTER_PORT": "29537"})
    assert result.returncode == 0, result.stderr
    assert "2 process(es)" in result.stdout
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in checkpoint.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]


def test_a_worker_error_is_reported_once_without_tracebacks(tmp_path, text_data, tiny_teacher_dir):
    """Only the main process takes the run folder, so only it finds training.output_dir to be a file; the other dies
    in the barrier that process never reaches (a gloo traceback), and torchrun and accelerate report the failure.
    The user sees distill's one line once (`-q`: accelerate's own CalledProcessError traceback is not ours to drop)."""
    output_dir = tmp_path / "run"
    output_dir.write_text("not a folder")
    path = write_recipe(tmp_path / "r.yaml", base_recipe(text_data, output_dir))
    accelerate = Path(sys.executable).with_name("accelerate")
    result = subprocess.run([str(accelerate), "launch", "-q", "--cpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distill", "train", str(path)],
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "MASTER_PORT": "29571"})
    assert result.returncode != 0
    assert result.stderr.count(f"error: training.output_dir: {output_dir} is a file, not a folder") == 1
    assert result.stderr.count("error: ") == 1
    assert "Traceback" not in result.stderr and "[rank1]" not in result.stderr, result.stderr


@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_the_workers_stderr_ends_at_the_first_error_line(chunk):
    """What the launching process lets through of its workers' stderr, however the bytes arrive."""
    from distill.training.cpu_launch import ErrorLineFilter

    stream = (b"W1201 torchrun: setting OMP_NUM_THREADS\nerr is not an error line\nWriting 50%\rWriting 100%\r\n"
              b"  error: indented, not ours\nerror: training.output_dir: run is a file\n"
              b"[rank1]: Traceback (most recent call last):\nerror: the same error from rank 1\n")
    shown: list[bytes] = []
    lines = ErrorLineFilter(shown.append)
    for start in range(0, len(stream), chunk):
        lines.feed(stream[start:start + chunk])
    lines.close()
    assert b"".join(shown) == stream[:stream.index(b"[rank1]")]

    shown.clear()  # a partial line passes at once (a progress bar), unless it may still become `error: `
    lines = ErrorLineFilter(shown.append)
    lines.feed(b"Writing 50%")
    assert b"".join(shown) == b"Writing 50%"
    lines.feed(b"\nerr")
    assert b"".join(shown) == b"Writing 50%\n"
    lines.close()  # the stream ended: what was held is shown
    assert b"".join(shown) == b"Writing 50%\nerr"
