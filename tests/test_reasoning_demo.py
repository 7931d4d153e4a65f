"""`distill demo reasoning` end to end on the tiny teacher: the verified arm trains only on accepted rows, the
unverified arm on as many rows drawn from every sample, each arm's recipe is what it says, the result file holds
what the table shows, and a second run reuses every stage. The real SmolLM2 run is marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from distill.demo.reasoning import RESULT, TABLE, run_reasoning_demo
from distill.demo.reasoning_eval import compare, wilson
from distill.demo.reasoning_plan import ReasoningOptions, sized
from distill.demo.reasoning_report import render
from distill.errors import DataError
from distill.results.reasoning import REASONING_KIND, REASONING_SCHEMA_VERSION, load_reasoning_result


def odd_length(record, completion):
    """A verifier for the tiny teacher (which cannot do arithmetic) that accepts some samples and rejects others."""
    return len(completion) % 2 == 1


def _options(out: Path) -> ReasoningOptions:
    return ReasoningOptions(out=out, teacher="builtin:tiny-teacher", layers=(0, 3), prompts=4, samples=2,
                            max_accepted=2, steps=2, batch_size=2, eval_problems=4, max_new_tokens=8,
                            eval_max_new_tokens=8, max_length=256, kd=True, threads=1,
                            verifier={"kind": "python", "function": "test_reasoning_demo:odd_length"})


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_arms_are_wired_as_described_and_the_result_holds_the_table(tmp_path):
    out = tmp_path / "demo"
    run_reasoning_demo(_options(out))
    result = load_reasoning_result(out / RESULT)
    raw = json.loads((out / RESULT).read_text())
    assert raw["schema_version"] == REASONING_SCHEMA_VERSION and raw["kind"] == REASONING_KIND
    assert raw["provenance"]["torch_threads"] == 1
    assert [a.name for a in result.arms] == ["init", "unverified", "verified", "verified_kd", "teacher"]

    samples = _jsonl(out / "generate" / "samples.jsonl")
    kept = _jsonl(out / "generate" / "train.jsonl")
    unverified = _jsonl(out / "data" / "unverified.jsonl")
    g = result.generation
    assert 0 < g.accepted < g.samples == len(samples) == 8  # the verifier really filters
    assert g.kept == len(kept) and all(r["accepted"] for r in kept)
    assert g.pass_at_1 == pytest.approx(g.accepted / g.samples)
    # same count; drawn from all samples, right or wrong
    assert len(unverified) == len(kept)
    keys = {(r["prompt_id"], r["sample"]) for r in samples}
    assert all((r["prompt_id"], r["sample"]) in keys for r in unverified)
    assert all(r["messages"][-1]["role"] == "assistant" for r in kept + unverified)

    arms = {a.name: a for a in result.arms}
    assert arms["verified"].training_rows == arms["verified"].accepted_rows == len(kept)
    assert arms["unverified"].training_rows == len(kept)
    assert arms["unverified"].accepted_rows == sum(r["accepted"] for r in unverified)
    assert {arms[n].steps for n in ("unverified", "verified", "verified_kd")} == {2}
    assert arms["verified"].objective == "seqkd alpha=1" and arms["verified_kd"].objective == "seqkd alpha=0.5"
    assert arms["init"].training_rows is None and arms["teacher"].training_rows is None
    for arm in result.arms:
        p = arm.pass_at_1
        assert arm.n == 4 and p.ci_low <= p.mean <= p.ci_high and p.mean == arm.correct / 4
        assert len(_jsonl(Path(arm.outputs))) == 4
    for arm in result.arms:  # the answer-sign slices partition the problems (a slice holding all is left out)
        signs = [c.n for name, c in arm.slices.items() if name.startswith("answer")]
        assert sum(signs) in (0, arm.n)
    assert result.student["params"] < result.student["teacher_params"]
    pairs = [(c.a, c.b) for c in result.comparisons]
    assert ("verified", "unverified") in pairs and ("verified", "init") in pairs
    assert result.eval.overlap_with_training == 0

    # the table is made from the result file alone
    table = (out / TABLE).read_text()
    assert table == render(result)
    for arm in result.arms:
        assert arm.label in table

    # a second run trains and evaluates nothing again
    trained = {n: (out / n / "metrics.jsonl").stat().st_mtime_ns for n in ("unverified", "verified", "verified_kd")}
    run_reasoning_demo(_options(out))
    assert {n: (out / n / "metrics.jsonl").stat().st_mtime_ns for n in trained} == trained
    again = load_reasoning_result(out / RESULT)
    assert [a.pass_at_1 for a in again.arms] == [a.pass_at_1 for a in result.arms]

    # a generation folder left by another setup (here: a changed fingerprint) is generated again, not an error
    run_json = out / "generate" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "rendering": "another tokenizer"}))
    run_reasoning_demo(_options(out))
    assert json.loads(run_json.read_text())["rendering"] != "another tokenizer"
    assert _jsonl(out / "generate" / "samples.jsonl") == samples


def test_wilson_interval_and_paired_comparison():
    assert wilson(5, 10) == pytest.approx({"mean": 0.5, "ci_low": 0.2366, "ci_high": 0.7634}, abs=1e-4)
    zero = wilson(0, 10)
    assert zero["ci_low"] == 0.0 and zero["ci_high"] == pytest.approx(0.2775, abs=1e-4)
    a = [{"id": i, "correct": i < 6} for i in range(20)]
    b = [{"id": i, "correct": i < 2 or i == 19} for i in range(20)]
    c = compare("a", "b", a, b)
    assert (c["a_only"], c["b_only"]) == (4, 1)
    assert c["difference"]["mean"] == pytest.approx(0.15)
    assert c["difference"]["ci_low"] <= 0.15 <= c["difference"]["ci_high"]
    assert 0 < c["mcnemar_p"] <= 1


def test_sizes_and_seeds_are_checked(tmp_path):
    quick = sized(ReasoningOptions(out=tmp_path), quick=True)
    assert quick.prompts < ReasoningOptions().prompts and quick.steps == 2
    half = sized(ReasoningOptions(out=tmp_path), minutes=10)
    assert (half.prompts, half.steps, half.eval_problems) == (32, 8, 50)
    with pytest.raises(DataError, match="overlap"):
        ReasoningOptions(out=tmp_path, train_seed=10, eval_seed=40).check()
    with pytest.raises(DataError, match="give one"):
        sized(ReasoningOptions(out=tmp_path), quick=True, minutes=5)


def test_cli_refuses_the_text_demos_flags_and_unknown_kinds(tmp_path):
    result = run_cli("demo", "reasoning", "--alpha", "0.5", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--alpha belong to the text demo" in result.stderr
    result = run_cli("demo", "reasonin", "--out", str(tmp_path / "y"))
    assert result.returncode == 2 and "unknown kind 'reasonin'" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_real_teacher_quick_run(tmp_path):
    """SmolLM2-135M-Instruct, `--quick`: the whole recipe on 16 problems, a few minutes on 2 CPU cores."""
    result = run_cli("demo", "reasoning", "--quick", "--out", str(tmp_path / "r"), timeout=1800)
    assert result.returncode == 0, result.stderr
    loaded = load_reasoning_result(tmp_path / "r" / RESULT)
    assert loaded.generation.samples == 32 and len(loaded.arms) == 4
    assert "(c) SFT on verified samples" in result.stdout


def test_the_shipped_recipe_is_the_demos_verified_arm(monkeypatch):
    from conftest import REPO
    from distill.demo.reasoning_plan import arm_recipe, generation_recipe
    from distill.recipe import validate_recipe

    monkeypatch.chdir(REPO)  # its data.train exists only after `distill generate`, so it is validated, not loaded
    shipped = validate_recipe(yaml.safe_load((REPO / "examples" / "recipes" / "reasoning.yaml").read_text()))
    options = ReasoningOptions(out=Path("runs/reasoning-recipe"))
    demo = arm_recipe(options, "verified", Path("runs/reasoning-recipe/generate/train.jsonl"))
    assert shipped.model_copy(update={"generate": None}) == demo
    assert shipped.generate == generation_recipe(options).generate
