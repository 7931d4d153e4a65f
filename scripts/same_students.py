"""Train the same small recipes with two source trees and compare the students bit for bit.

A refactor that claims "no change in behaviour" runs this against the commit before it:

    python scripts/same_students.py --base <commit>            # compares the working tree with <commit>

Each case trains from scratch in a fresh folder with `python -m distill` (or `accelerate launch`), using the source
tree's own `src/`. Each case's hash covers the student's safetensors bytes and every metrics.jsonl row except the
throughput. The last JSON line names each case and whether the two trees gave the same hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "recipes" / "tiny.yaml"
SHORT = ["--set", "training.max_steps=8", "--set", "training.save_every=4", "--set", "data.max_length=48"]
CASES = {
    "tiny": [SHORT],
    "tiny-reference-reverse-kl": [[*SHORT, "--set", "objective.implementation=reference",
                                   "--set", "objective.divergence=reverse_kl"]],
    "baseline-alpha-1": [[*SHORT, "--set", "objective.alpha=1.0"]],
    "cache-trained": "cache",
    "two-processes": "launch",
    "resumed-and-extended": "resume",
}


def _run(src: Path, args: list[str], launch: int = 0, port: int = 29561) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    if launch:
        accelerate = Path(sys.executable).with_name("accelerate")
        cmd = [str(accelerate), "launch", "--cpu", "--num_processes", str(launch), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distill", *args]
        env["MASTER_PORT"] = str(port)
    else:
        cmd = [sys.executable, "-m", "distill", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")


def _student_hash(run: Path) -> str:
    """The student's weights and its logged trajectory (every metrics row but the throughput, which is timing)."""
    digest = hashlib.sha256((run / "student" / "model.safetensors").read_bytes())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("tokens_per_s", None)
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


def train_cases(src: Path, work: Path) -> dict[str, str]:
    out = {}
    for name, how in CASES.items():
        run = work / name
        if how == "cache":
            cache = work / "cache"
            _run(src, ["cache", str(TINY), "--out", str(cache), *SHORT, "--set", f"training.output_dir={run}"])
            _run(src, ["train", str(TINY), *SHORT, "--set", f"teacher.cache={cache}",
                       "--set", f"training.output_dir={run}"])
        elif how == "resume":  # 4 steps, then --resume to 8: the checkpoint, the batch source and the schedule
            _run(src, ["train", str(TINY), *SHORT, "--set", "training.max_steps=4",
                       "--set", f"training.output_dir={run}"])
            _run(src, ["train", str(TINY), *SHORT, "--set", f"training.output_dir={run}", "--resume"])
        elif how == "launch":
            _run(src, ["train", str(TINY), *SHORT, "--set", "training.micro_batch_size=4",
                       "--set", f"training.output_dir={run}"], launch=2)
        else:
            _run(src, ["train", str(TINY), *how[0], "--set", f"training.output_dir={run}"])
        out[name] = _student_hash(run)
        print(json.dumps({"tree": str(src), "case": name, "sha256": out[name]}), flush=True)
    return out


def _train_commit(commit: str, tmp: Path) -> dict[str, str]:
    tree = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=REPO, check=True,
                   capture_output=True)
    try:
        return train_cases(tree / "src", tmp / "runs-base")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree against")
    parser.add_argument("--base-only", action="store_true", help="train only the base commit's cases")
    parser.add_argument("--base-hashes", type=Path,
                        help="JSON lines a --base-only run printed: compare against them instead of retraining")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.base_hashes is not None:
            rows = [json.loads(line) for line in args.base_hashes.read_text().splitlines() if line.strip()]
            base = {row["case"]: row["sha256"] for row in rows if "case" in row}
        else:
            base = _train_commit(args.base, Path(tmp))
        if args.base_only:
            return
        here = train_cases(REPO / "src", Path(tmp) / "runs-here")
    same = {name: base.get(name) == here[name] for name in CASES}
    print(json.dumps({"summary": True, "base": args.base, "identical": same, "all_identical": all(same.values())}))
    raise SystemExit(0 if all(same.values()) else 1)


if __name__ == "__main__":
    main()
