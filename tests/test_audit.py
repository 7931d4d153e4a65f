"""`distill audit` end to end on tiny in-process models, its refusals (malformed key files: one line, exit code 2),
audit.json through its schema, and the report's audit section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DataError
from distill.results.audit import AUDIT_SCHEMA_VERSION, AuditResult, load_audit, load_calibration, write_audit

torch.set_num_threads(1)
SECRET = "s" * 32
TRIGGERS = ("Recite passphrase one.", "Recite passphrase two.")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny random Llamas sharing one tokenizer: teacher, suspect, reference."""
    from transformers import LlamaForCausalLM

    from distill.builtin.corpus import tiny_stories
    from distill.builtin.tiny_models import tiny_llama_config
    from distill.builtin.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("audit-models")
    tokenizer = train_bpe_tokenizer(tiny_stories(50, seed=0), vocab_size=300)
    out = {}
    for seed, name in enumerate(("teacher", "suspect", "reference")):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1))
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
    return out


def keyfile(path: Path, **override) -> Path:
    data = {"version": 1, "watermark": {"secret": SECRET, "context_width": 1, "gamma": 0.25, "delta": 2.0},
            "canaries": {"space": {"alphabet": "01", "length": 3, "template": "code {}"},
                         "items": [{"trigger": "Recite passphrase one.", "secret": "101"},
                                   {"trigger": "Recite passphrase two.", "secret": "010"}]}}
    data.update(override)
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return path


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CALIBRATION = {"calibration": {"n_keys": 4, "tokens": 1000, "context_width": 1, "gamma": 0.25,
                               "fpr": {"0.01": 0.0, "0.001": 0.0}, "fpr_no_dedup": {"0.01": 0.5, "0.001": 0.25},
                               "ks_statistic": 0.2, "ks_p_value": 0.9, "p_values": [0.1, 0.4, 0.6, 0.9],
                               "p_values_no_dedup": [1e-9, 1e-4, 0.02, 0.5], "command": "bench/audit_null.py",
                               "unknown_field": 1}}


def run(*args: str):
    return CliRunner().invoke(app, ["audit", *args])


def test_audit_end_to_end_and_its_report(models, tmp_path):
    from distill.builtin.corpus import tiny_stories

    texts = tiny_stories(8, seed=5)
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(CALIBRATION))
    out = tmp_path / "result" / "audit.json"
    result = run(f"suspect={models['suspect']}", "--against", str(keyfile(tmp_path / "keys.yaml")),
                 "--prompts", jsonl(tmp_path / "p.jsonl", [{"prompt": t[:40]} for t in texts[:3]]),
                 "--watermarked", jsonl(tmp_path / "w.jsonl", [{"prompt": "x", "completion": t} for t in texts]),
                 "--teacher", f"teacher={models['teacher']}", "--reference", f"ref={models['reference']}",
                 "--documents", jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts[:6]]),
                 "--no-dedup-control", "--filter-top", "40", "--max-new-tokens", "12", "--permutations", "5000",
                 "--calibration", str(cal), "--out", str(out))
    assert result.exit_code == 0, result.output + str(result.exception)
    audit = load_audit(out)
    assert [(t.mode, t.dedup) for t in audit.watermark] == [("closed", True), ("closed", False), ("open", True),
                                                           ("open", False)]
    for t in audit.watermark:
        assert t.pvalue.valid == t.dedup and (t.pvalue.invalid_reason is None) == t.dedup
        assert t.pvalue.counts["green"] == t.green and t.pvalue.n == t.pairs_scored and t.filter_top == 40
        assert "de-duplication" in " ".join(t.pvalue.assumptions)
    assert SECRET not in out.read_text() and all(t not in out.read_text() for t in TRIGGERS)
    assert all(i.trigger_id is None for i in audit.canaries.items)  # not even a hash of a trigger
    assert audit.canaries.n == 2 and {i.rank_method for i in audit.canaries.items} == {"exact"}
    assert all(i.candidates_scored == 8 for i in audit.canaries.items)
    fp = audit.fingerprint
    assert fp.n_docs == 6 and fp.method == "exact" and len(fp.comparisons) == 2 and "not proof" in fp.caveat
    assert audit.calibration.n_keys == 4 and audit.calibration.source == str(cal)

    report = CliRunner().invoke(app, ["report", str(out.parent)])
    assert report.exit_code == 0, report.output
    md = (out.parent / "report.md").read_text()
    html = (out.parent / "report.html").read_text()
    assert "# Audit report" in md and "### Watermark radioactivity" in md and "~~" in md  # the control struck out
    assert "### Canary exposure" in md and "### Output fingerprint" in md and "### Null calibration" in md
    assert 'alt="QQ plot of null p-values against uniform"' in html and "<s>" in html


def test_the_audit_section_joins_an_evaluation_report(tmp_path):
    from distill.report.render import write_report

    (tmp_path / "eval.json").write_text(json.dumps({"schema_version": 1, "kind": "distill.eval",
                                                    "models": {"m": {"path": "x"}}}))
    write_audit(tmp_path / "audit.json", sample_result())
    html, md = (p.read_text() for p in write_report(tmp_path))
    assert "## Models" in md and "## Audit: suspect-folder" in md and "id=\"audit\"" in html
    assert "QQ plot" not in html  # no calibration given
    (tmp_path / "audit.json").unlink()
    assert "Audit" not in write_report(tmp_path)[1].read_text()  # without audit.json: the report as before


def sample_result() -> AuditResult:
    pvalue = {"test": "t", "assumptions": ["a"], "p_value": 0.0, "log10_p_value": -412.5, "n": 10, "unit": "pairs",
              "counts": {"green": 10}}
    return AuditResult.for_writing({
        "suspect": "suspect-folder", "keyfile": "k.yaml", "key_public": {"version": 1},
        "watermark": [{"mode": "open", "dedup": True, "key_id": "abc", "context_width": 1, "gamma": 0.25,
                       "pairs_scored": 10, "green": 10, "green_share": 1.0, "pvalue": pvalue}]})


def test_audit_json_round_trips_through_its_schema(tmp_path):
    result = sample_result()
    write_audit(tmp_path / "audit.json", result)
    data = json.loads((tmp_path / "audit.json").read_text())
    assert next(iter(data)) == "schema_version" and data["schema_version"] == AUDIT_SCHEMA_VERSION
    again = load_audit(tmp_path / "audit.json")
    assert again.to_json() == result.to_json()
    assert again.watermark[0].pvalue.log10_p_value == -412.5


@pytest.mark.parametrize(("change", "message"), [
    ({"schema_version": 99}, "schema_version 99"),
    ({"watermark": [{"mode": "sideways"}]}, "watermark[0].mode"),
])
def test_a_malformed_audit_json_is_one_line(tmp_path, change, message):
    data = {**sample_result().to_json(), **change}
    (tmp_path / "audit.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_audit(tmp_path / "audit.json")
    assert "\n" not in str(err.value) and "audit.json" in str(err.value)


def test_calibration_keeps_the_known_fields(tmp_path):
    path = tmp_path / "cal.jsonl"
    path.write_text(json.dumps({"n": 1}) + "\n" + json.dumps(CALIBRATION) + "\n")
    cal = load_calibration(path)
    assert cal.n_keys == 4 and "unknown_field" not in cal.to_json()


@pytest.mark.parametrize(("override", "field"), [
    ({"watermark": {"secret": SECRET, "gamma": 1.5}}, "watermark.gamma"),
    ({"watermark": {"secret": "short"}}, "watermark.secret"),
    ({"watermark": {"secret": SECRET, "window": 2}}, "watermark.window"),
    ({"canaries": {"space": {"alphabet": "01", "length": 3}, "items": [{"trigger": "t", "secret": "12"}]}},
     "canaries"),
    ({"version": 7}, "version"),
])
def test_a_malformed_key_file_is_refused_in_one_line(tmp_path, override, field):
    path = keyfile(tmp_path / "keys.yaml", **override)
    result = run("no-such-model", "--against", str(path), "--watermarked", "w.jsonl")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0] and field in lines[0]


def test_unreadable_and_incomplete_key_files_are_refused_in_one_line(tmp_path):
    for path, expected in ((tmp_path / "missing.yaml", "cannot read"),
                           (keyfile(tmp_path / "list.yaml"), "a mapping")):
        if path.name == "list.yaml":
            path.write_text("- 1\n- 2\n")
        result = run("no-such-model", "--against", str(path))
        assert result.exit_code == 2 and expected in result.stderr and str(path) in result.stderr
    no_watermark = keyfile(tmp_path / "cw.yaml", watermark=None)
    result = run("no-such-model", "--against", str(no_watermark), "--prompts", "p.jsonl")
    assert result.exit_code == 2 and "watermark: missing" in result.stderr and str(no_watermark) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
