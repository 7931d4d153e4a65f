"""`distill eval` and `distill report` end to end, on tiny Llama models built here: models whose output width is
padded past the tokenizer (as training allows), input errors that must be one line, the contamination check when no
training text can be read, the provenance block, and a report rendered from eval.json alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import run_cli
from distill.builtin.corpus import tiny_stories
from distill.builtin.tiny_models import tiny_llama_config


def tiny_llama(tokenizer, width: int, seed: int) -> LlamaForCausalLM:
    """A 1-layer Llama whose output is `width` logits wide (≥ len(tokenizer): the rest are padding rows)."""
    config = tiny_llama_config(len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1)
    config.vocab_size = width
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save(model: LlamaForCausalLM, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> dict[str, Path]:
    """Three models sharing the tiny tokenizer, padded to three different widths, and a small eval JSONL."""
    root = tmp_path_factory.mktemp("padded-eval")
    n = len(tiny_tokenizer)
    folders = {name: save(tiny_llama(tiny_tokenizer, width, seed), tiny_tokenizer, root / name)
               for name, width, seed in (("wide", n + 128, 0), ("padded", n + 64, 1), ("exact", n, 2))}
    folders["data"] = write_jsonl(root / "held.jsonl", [{"text": t} for t in tiny_stories(6, seed=11)])
    return folders


@pytest.fixture(scope="module")
def evaluated(padded: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """`distill eval` of the three widths (the widest as the reference), written into a folder as eval.json."""
    out_dir = tmp_path_factory.mktemp("eval-out")
    result = run_cli("eval", f"padded={padded['padded']}", f"exact={padded['exact']}",
                     "--reference", f"wide={padded['wide']}", "--baseline", "exact", "--data", str(padded["data"]),
                     "--out", str(out_dir / "eval.json"))
    return result, out_dir


def _one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_eval_of_models_padded_to_different_widths(evaluated, tiny_tokenizer):
    result, out_dir = evaluated
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out_dir / "eval.json").read_text())
    metrics = data["sets"]["held"]["metrics"]
    assert set(metrics) == {"wide", "padded", "exact"}
    for name in ("padded", "exact"):
        assert 0 <= metrics[name]["agreement"]["mean"] <= 1
        assert metrics[name]["kl_forward"]["mean"] >= 0


def test_report_renders_from_eval_json_alone(evaluated):
    result, out_dir = evaluated
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out_dir / "summary.json").exists()
    report = run_cli("report", str(out_dir))
    assert report.returncode == 0, report.stderr
    html, md = (out_dir / "report.html").read_text(), (out_dir / "report.md").read_text()
    for name in ("wide", "padded", "exact"):
        assert name in html and name in md
    assert "Evaluation report" in md


def test_max_docs_zero_is_a_one_line_error(padded):
    result = run_cli("eval", str(padded["exact"]), "--data", str(padded["data"]), "--max-docs", "0")
    assert "--max-docs" in _one_line_error(result)


def test_out_under_a_regular_file_is_a_one_line_error(padded, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "eval.json"
    result = run_cli("eval", str(padded["exact"]), "--data", str(padded["data"]), "--out", str(out))
    line = _one_line_error(result)
    assert "--out" in line and str(blocker) in line


def test_out_that_is_a_folder_is_a_one_line_error(padded, tmp_path):
    result = run_cli("eval", str(padded["exact"]), "--data", str(padded["data"]), "--out", str(tmp_path))
    assert "--out" in _one_line_error(result)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_out_in_a_read_only_folder_is_a_one_line_error(padded, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli("eval", str(padded["exact"]), "--data", str(padded["data"]), "--out",
                         str(locked / "eval.json"))
    finally:
        locked.chmod(0o700)
    assert "--out" in _one_line_error(result)


def test_contamination_without_readable_training_text_is_not_computed(padded, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"id": i, "label": "positive"} for i in range(5)])
    out_dir = tmp_path / "result"
    result = run_cli("eval", str(padded["exact"]), "--data", str(padded["data"]), "--train-data", str(train),
                     "--out", str(out_dir / "eval.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    block = json.loads((out_dir / "eval.json").read_text())["sets"]["held"]
    assert block["contamination"] is None, block["contamination"]
    assert str(train) in block["contamination_reason"]
    report = run_cli("report", str(out_dir))
    assert report.returncode == 0, report.stderr
    md = (out_dir / "report.md").read_text()
    assert "not computed" in md and "0.0%" not in md


def test_provenance_counts_cpus_and_torch_threads_separately():
    from distill.results.provenance import provenance

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        facts = provenance()
    finally:
        torch.set_num_threads(before)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert facts["cpu_count"] == cpus
    assert facts["torch_threads"] == 1
