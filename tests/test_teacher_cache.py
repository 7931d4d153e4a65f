"""`distill cache` end to end on the tiny teacher: what is stored, kill -9 and resume, damage, setups that do not
match, training from the cache (k = V against the live teacher), several processes, and a planned subset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import accelerate_launch, base_recipe, kill_9_when, run_cli, write_recipe
from distill.data.batch import Batch, collate
from distill.data.dataset import tokenize_data
from distill.errors import CacheError
from distill.losses.signals import TopKSignal
from distill.models import load_teacher, load_tokenizer
from distill.recipe import validate_recipe
from distill.teachers.cache.build import build_cache
from distill.teachers.cache.fingerprint import weights_sha256
from distill.teachers.cache.shard import read_index
from distill.teachers.cache.store import TeacherCache
from distill.training.loop import train
from distill.training.metrics import read_metrics


def _recipe(data: Path, run: Path, **sections) -> dict:
    recipe = base_recipe(data, run, **sections)
    recipe["teacher"].setdefault("top_k", 16)
    return recipe


def _journal(cache: Path) -> np.ndarray:
    return np.concatenate([read_index(p) for p in sorted(cache.glob("shard-*.idx"))])


def test_cache_holds_the_live_teachers_top_k_for_every_training_token(tmp_path, text_data, tiny_teacher_dir):
    recipe = validate_recipe(_recipe(text_data, tmp_path / "run", teacher={"capture_temperature": 2.0}))
    manifest = build_cache(recipe, tmp_path / "cache", shard_tokens=300)

    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    data = tokenize_data(recipe.data, tokenizer)
    teacher = load_teacher(recipe.teacher)
    setup = manifest["setup"]
    assert manifest["format_version"] == 1 and manifest["k"] == 16 and manifest["capture_temperature"] == 2.0
    assert setup["teacher"]["weights_sha256"] == weights_sha256(teacher)
    assert setup["teacher"]["config"]["num_hidden_layers"] == 4
    assert len(setup["tokenizer"]["sha256"]) == 64 and "chat_template" in setup["tokenizer"]
    assert len(setup["data"]["sha256"]) == 64
    assert len(manifest["shards"]) > 2 and all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert manifest["n_tokens"] == data.n_targets
    assert manifest["bytes_per_token"] == pytest.approx(manifest["bytes"] / manifest["n_tokens"])
    # exactly one record per example, and one row per target token
    journal = _journal(tmp_path / "cache")
    assert sorted(journal["example"].tolist()) == list(range(len(data.examples)))
    assert journal["tokens"].tolist() == [data.examples[e].n_targets for e in journal["example"]]

    cache = TeacherCache.open(tmp_path / "cache")
    examples = [0, 5, len(data.examples) - 1]
    got = cache.signal(examples)
    batch = collate([data.examples[e] for e in examples], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    live = TopKSignal.from_logits(logits[:, :-1, :len(tokenizer)][mask], 16, temperature=2.0)  # real tokens only
    assert got.capture_temperature == 2.0
    assert torch.equal(got.ids.sort(-1).values, live.ids.sort(-1).values)
    a = got.logprobs.gather(-1, got.ids.argsort(-1))
    b = live.logprobs.gather(-1, live.ids.argsort(-1))
    assert (a - b).abs().max() < 1 / 16 + 1e-3
    assert torch.allclose(got.tail(), live.tail(), atol=5e-3, rtol=5e-3)


def test_kill_9_mid_build_resumes_with_exactly_one_record_per_token(tmp_path, tiny_teacher_dir):
    from distill.builtin.corpus import tiny_stories

    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_stories(1200, seed=5)))
    path = write_recipe(tmp_path / "r.yaml", _recipe(data, tmp_path / "run"))
    args = ["cache", str(path), "--batch-size", "1", "--shard-tokens", "2000"]

    killed = tmp_path / "killed"
    kill_9_when(lambda: len(list(killed.glob("shard-*.json"))) >= 1 and len(_journal(killed)) > 100, *args, "--out",
                str(killed))
    assert not (killed / "manifest.json").exists() and (killed / "build.json").exists()
    with pytest.raises(CacheError, match="incomplete"):
        TeacherCache.open(killed)

    assert run_cli(*args, "--out", str(killed)).returncode == 0
    assert run_cli(*args, "--out", str(tmp_path / "straight")).returncode == 0
    journal = _journal(killed)
    n_examples = json.loads((killed / "manifest.json").read_text())["setup"]["data"]["n_examples"]
    assert sorted(journal["example"].tolist()) == list(range(n_examples))
    a, b = TeacherCache.open(killed), TeacherCache.open(tmp_path / "straight")
    for example in range(0, n_examples, 97):
        x, y = a.read(example), b.read(example)
        assert np.array_equal(x.ids, y.ids) and np.array_equal(x.logprobs, y.logprobs)
    assert a.manifest["n_tokens"] == b.manifest["n_tokens"]


def test_a_damaged_shard_is_refused_then_rebuilt(tmp_path, text_data, tiny_teacher_dir):
    recipe = _recipe(text_data, tmp_path / "run")
    path = write_recipe(tmp_path / "r.yaml", recipe)
    out = tmp_path / "cache"
    build_cache(validate_recipe(recipe), out, shard_tokens=300)
    shard = out / "shard-00001.bin"
    original = shard.read_bytes()

    shard.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    with pytest.raises(CacheError, match=r"shard-00001.bin is corrupted .*refused"):
        TeacherCache.open(out)
    shard.write_bytes(original[:-10])
    with pytest.raises(CacheError, match=r"shard-00001.bin has [\d,]+ bytes, the manifest says"):
        TeacherCache.open(out)
    result = run_cli("train", str(path), "--set", f"teacher.cache={out}")
    assert result.returncode == 2 and "truncated" in result.stderr and "Traceback" not in result.stderr

    rebuilt = run_cli("cache", str(path), "--out", str(out), "--shard-tokens", "300")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert shard.read_bytes() == original
    TeacherCache.open(out)


def test_a_cache_of_another_setup_is_refused_naming_the_difference(tmp_path, text_data, tiny_teacher_dir):
    recipe = _recipe(text_data, tmp_path / "run")
    out = tmp_path / "cache"
    build_cache(validate_recipe(recipe), out)
    recipe["teacher"]["cache"] = str(out)

    changed = _recipe(text_data, tmp_path / "run2", teacher={"cache": str(out), "capture_temperature": 0.5})
    changed["data"]["max_length"] = 24
    with pytest.raises(CacheError) as err:
        train(validate_recipe(changed))
    assert "data.max_length 32 in the cache, 24 in the recipe" in str(err.value)
    assert "teacher.capture_temperature: 2.0 in the cache, 0.5 in the recipe" in str(err.value)

    from distill.check import check_recipe  # `distill check` makes the same check before any training

    problems = check_recipe(validate_recipe(changed)).problems
    assert len(problems) == 1 and "data.max_length 32 in the cache, 24 in the recipe" in problems[0]

    text_data.write_text(text_data.read_text().replace("the", "a"))  # same file, other contents
    with pytest.raises(CacheError, match="the tokenized sequences differ"):
        train(validate_recipe(_recipe(text_data, tmp_path / "run3", teacher={"cache": str(out)})))

    # building into it with another k is refused too, and leaves it untouched
    path = write_recipe(tmp_path / "r.yaml", recipe)
    result = run_cli("cache", str(path), "--out", str(out), "--set", "teacher.top_k=8")
    assert result.returncode == 2
    assert "teacher.top_k: 16 in the cache, 8 in the recipe" in result.stderr
    TeacherCache.open(out)


def test_a_cache_from_another_teacher_is_refused_even_when_no_teacher_is_loaded(tmp_path, text_data,
                                                                                  tiny_teacher_dir):
    """The recipe's teacher (model, revision, dtype) is always compared with the cache's; with the model loaded
    (student.from_teacher) its weights decide, so the same weights under another name are accepted."""
    out = tmp_path / "cache"
    build_cache(validate_recipe(_recipe(text_data, tmp_path / "run")), out)
    student = {"model": str(tiny_teacher_dir)}  # no from_teacher: the teacher model is not loaded
    for teacher, expected in (({"model": str(tiny_teacher_dir)}, "teacher.model: 'builtin:tiny-teacher' in the cache"),
                              ({"dtype": "bfloat16"}, "teacher.dtype: 'float32' in the cache, 'bfloat16'"),
                              ({"revision": "v2"}, "teacher.revision: None in the cache, 'v2' in the recipe")):
        recipe = _recipe(text_data, tmp_path / "other", teacher={"cache": str(out), **teacher})
        recipe["student"] = student
        with pytest.raises(CacheError, match=expected.replace("(", r"\(")):
            train(validate_recipe(recipe))
    same_weights = _recipe(text_data, tmp_path / "renamed", teacher={"cache": str(out), "model": str(tiny_teacher_dir)})
    train(validate_recipe(same_weights))  # from_teacher loads it: the weight hashes match


def test_a_tail_bucket_at_another_temperature_is_refused_in_train_and_check(tmp_path, text_data, tiny_teacher_dir):
    recipe = _recipe(text_data, tmp_path / "run", teacher={"capture_temperature": 1.0})  # loss T is 2.0
    build_cache(validate_recipe(recipe), tmp_path / "cache")
    recipe["teacher"]["cache"] = str(tmp_path / "cache")
    with pytest.raises(CacheError, match=r"objective\.temperature: 2 with objective\.topk_mode: tail"):
        train(validate_recipe(recipe))
    result = run_cli("check", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.returncode == 2 and "teacher.capture_temperature: 2" in result.stderr
    recipe["objective"]["topk_mode"] = "renormalize"  # exact within the top-k at any temperature
    train(validate_recipe(recipe))


@pytest.mark.parametrize("implementation", ["chunked", "reference"])
def test_a_full_vocabulary_cache_trains_exactly_like_the_live_teacher(tmp_path, text_data, tiny_teacher_dir,
                                                                      implementation):
    vocab = len(load_tokenizer("t", str(tiny_teacher_dir), None, False))
    # captured at 1.0, trained at 2.0: with k = V there is no tail, so re-tempering is exact in tail mode too
    sections = {"teacher": {"top_k": vocab, "capture_temperature": 1.0},
                "objective": {"alpha": 0.3, "temperature": 2.0, "implementation": implementation}}
    live = _recipe(text_data, tmp_path / "live", **sections)
    train(validate_recipe(live))
    for encoding in ("exact", "q8"):
        recipe = _recipe(text_data, tmp_path / encoding, **sections)
        build_cache(validate_recipe(recipe), tmp_path / f"cache-{encoding}", encoding=encoding)
        recipe["teacher"]["cache"] = str(tmp_path / f"cache-{encoding}")
        train(validate_recipe(recipe))

    live_loss = [m["kd"] for m in read_metrics(tmp_path / "live")]
    exact_loss = [m["kd"] for m in read_metrics(tmp_path / "exact")]
    q8_loss = [m["kd"] for m in read_metrics(tmp_path / "q8")]
    assert exact_loss == pytest.approx(live_loss, rel=1e-5)
    # the quantised values: close, not equal (≤ 1e-4 nats on a KD term of 0.04-0.16: the relative bound alone failed
    # on the smallest step, 0.24% off, at the commit before this line too)
    assert q8_loss == pytest.approx(live_loss, rel=2e-3, abs=2e-4)
    assert all(m["teacher_mass"] == pytest.approx(1.0, abs=1e-5) for m in read_metrics(tmp_path / "exact"))
    a = load_file(tmp_path / "live" / "student" / "model.safetensors")
    b = load_file(tmp_path / "exact" / "student" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_training_from_a_cache_alone_needs_no_teacher_model(tmp_path, text_data, tiny_teacher_dir):
    recipe = _recipe(text_data, tmp_path / "run", teacher={"top_k": 8}, objective={"topk_mode": "renormalize"})
    build_cache(validate_recipe(recipe), tmp_path / "cache")
    cache_only = _recipe(text_data, tmp_path / "run", objective={"topk_mode": "renormalize"})
    cache_only["teacher"] = {"cache": str(tmp_path / "cache"), "top_k": 8}  # no model: nothing to load
    cache_only["student"] = {"model": str(tiny_teacher_dir)}
    path = write_recipe(tmp_path / "r.yaml", cache_only)
    result = run_cli("train", str(path))
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(tmp_path / "run")
    assert all(0.5 < m["teacher_mass"] < 1.0 and m["kd"] > 0 for m in metrics)


def test_shards_from_two_processes_form_one_cache(tmp_path, text_data, tiny_teacher_dir):
    recipe = _recipe(text_data, tmp_path / "run")
    path = write_recipe(tmp_path / "r.yaml", recipe)
    build_cache(validate_recipe(recipe), tmp_path / "one", shard_tokens=400, encoding="exact")
    two = accelerate_launch(2, "cache", str(path), "--out", str(tmp_path / "two"), "--shard-tokens", "400",
                            "--encoding", "exact", port=29533)
    assert two.returncode == 0, two.stderr
    a, b = TeacherCache.open(tmp_path / "one"), TeacherCache.open(tmp_path / "two")
    assert b.manifest["build"]["processes"] == 2 and len(b.manifest["shards"]) == len(a.manifest["shards"]) > 2
    journal = _journal(tmp_path / "two")
    assert sorted(journal["example"].tolist()) == list(range(a.manifest["setup"]["data"]["n_examples"]))
    for example in range(a.manifest["setup"]["data"]["n_examples"]):
        x, y = a.read(example), b.read(example)
        assert np.array_equal(x.ids, y.ids) and np.allclose(x.logprobs, y.logprobs, atol=1e-5)

    # and two processes train from it like one: the signal rides along each process's micro-batches under DDP
    recipe["teacher"]["cache"] = str(tmp_path / "two")
    recipe["training"].update(batch_size=8, micro_batch_size=2)
    train(validate_recipe(recipe))
    path = write_recipe(tmp_path / "r.yaml", recipe)
    ddp = accelerate_launch(2, "train", str(path), "--set", f"training.output_dir={tmp_path / 'ddp'}", port=29534)
    assert ddp.returncode == 0, ddp.stderr
    one_loss = [m["loss"] for m in read_metrics(tmp_path / "run")]
    assert [m["loss"] for m in read_metrics(tmp_path / "ddp")] == pytest.approx(one_loss, rel=1e-5)


def test_a_planned_only_cache_serves_its_own_run_and_refuses_another(tmp_path, text_data, tiny_teacher_dir):
    recipe = _recipe(text_data, tmp_path / "run")
    manifest = build_cache(validate_recipe(recipe), tmp_path / "cache", planned_only=True)
    assert manifest["n_examples"] <= 4 * 4  # 4 steps × 4 sequences
    recipe["teacher"]["cache"] = str(tmp_path / "cache")
    train(validate_recipe(recipe))
    recipe["seed"] = 1
    recipe["training"]["output_dir"] = str(tmp_path / "run2")
    with pytest.raises(CacheError, match="examples this run visits are not in"):
        train(validate_recipe(recipe))


def test_a_cache_folder_has_one_writer_and_overwrite_deletes_only_a_cache(tmp_path, text_data, tiny_teacher_dir):
    from distill.errors import CacheError as Refused
    from distill.locking import FolderLock

    path = write_recipe(tmp_path / "r.yaml", _recipe(text_data, tmp_path / "run"))
    out = tmp_path / "cache"
    out.mkdir()
    with FolderLock(out, "--out", Refused):  # another build holds it
        held = run_cli("cache", str(path), "--out", str(out))
    assert held.returncode == 2 and f"pid {os.getpid()}" in held.stderr and "Traceback" not in held.stderr

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = run_cli("cache", str(path), "--out", str(mine), "--overwrite")
    assert refused.returncode == 2 and "not a teacher cache (it holds notes.txt)" in refused.stderr
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("divergence", ["reverse_kl", "akl"])
def test_a_reverse_type_divergence_from_a_cache_costs_no_more_than_from_the_live_teacher(
        tmp_path, text_data, tiny_teacher_dir, divergence):
    """At step 1 both students are the same copy of the teacher's layers, so the only difference is the signal: the
    k + 1 buckets of a cache merge outcomes, and a reverse KL over them is at most the dense one (AKL, whose weights
    are not an f-divergence's, within a few percent). A sharp capture temperature makes the tails tiny — where an
    underflowed tail used to be charged ~q_tail · 10⁴ nats."""
    sections = {"teacher": {"top_k": 8}, "objective": {"alpha": 0.0, "temperature": 0.3, "divergence": divergence},
                "training": {"max_steps": 1}}
    live = _recipe(text_data, tmp_path / "live", **sections)
    train(validate_recipe(live))
    cached = _recipe(text_data, tmp_path / "cached", **sections)
    build_cache(validate_recipe(cached), tmp_path / "cache")
    cached["teacher"]["cache"] = str(tmp_path / "cache")
    train(validate_recipe(cached))
    live_kd, cache_kd = (read_metrics(tmp_path / name)[0]["kd"] for name in ("live", "cached"))
    assert 0 < cache_kd <= live_kd * (1.05 if divergence == "akl" else 1.0 + 1e-5), (cache_kd, live_kd)


def test_overwrite_into_a_new_folder_builds(tmp_path, text_data, tiny_teacher_dir):
    path = write_recipe(tmp_path / "r.yaml", _recipe(text_data, tmp_path / "run"))
    result = run_cli("cache", str(path), "--out", str(tmp_path / "new"), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert TeacherCache.open(tmp_path / "new").manifest["tail"] == "logsumexp"


def _teacher_log_p(recipe, examples: list[int], temperature: float) -> torch.Tensor:
    """The live teacher's log-probabilities at the examples' target positions (rows in the cache's order)."""
    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    data = tokenize_data(recipe.data, tokenizer)
    batch = collate([data.examples[e] for e in examples], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = load_teacher(recipe.teacher)(input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    return torch.log_softmax(logits[:, :-1, :len(tokenizer)][mask] / temperature, -1)


def test_a_sampled_cache_stores_teacher_draws_reproducibly_and_trains(tmp_path, text_data, tiny_teacher_dir):
    """The sampled scheme end to end: the manifest records it, every position holds draws from the live teacher at
    the capture temperature (ids it can produce, their log-probabilities, counts summing to the draws), a second
    build writes the same bytes, and training reads it (logging distinct tokens per position)."""
    sampled = {"cache_scheme": "sampled", "sample_draws": 24}
    recipe = validate_recipe(_recipe(text_data, tmp_path / "run", teacher=sampled))
    manifest = build_cache(recipe, tmp_path / "cache", shard_tokens=300)
    assert manifest["scheme"] == {"name": "sampled", "draws": 24, "proposal_temperature": 1.0, "seed": 0}
    assert manifest["k"] is None and manifest["capture_temperature"] == 2.0
    again = build_cache(recipe, tmp_path / "again", shard_tokens=300)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]

    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    cache = TeacherCache.open(tmp_path / "cache")
    examples = [0, 3, len(tokenize_data(recipe.data, tokenizer).examples) - 1]
    got = cache.signal(examples)
    log_p = _teacher_log_p(recipe, examples, temperature=2.0)
    live = got.weights > 0
    assert got.ids.shape[0] == len(log_p) and torch.allclose(got.weights.sum(-1), torch.ones(len(got.ids)))
    assert torch.all((got.weights * 24 - (got.weights * 24).round()).abs() < 1e-5)  # count / draws
    assert (got.logprobs - log_p.gather(-1, got.ids))[live].abs().max() < 1 / 16 + 1e-3  # the q8 step
    assert log_p.gather(-1, got.ids)[live].min() > -15  # drawn tokens are ones the teacher gives real mass
    inclusion = cache.signal(examples, "inclusion")  # p / P(drawn), read from the same records
    assert torch.equal(inclusion.ids, got.ids) and torch.equal(inclusion.weights > 0, live)
    p = got.logprobs.double().exp()
    assert torch.allclose(inclusion.weights[live].double(), (p / (1 - (1 - p) ** 24))[live], rtol=1e-5)

    recipe_dict = _recipe(text_data, tmp_path / "run", teacher={**sampled, "cache": str(tmp_path / "cache")})
    train(validate_recipe(recipe_dict))
    metrics = read_metrics(tmp_path / "run")
    assert all(1.0 <= m["teacher_distinct"] <= 24 and 0 < m["kd"] < 20 for m in metrics)


def test_a_counts_cache_serves_the_q8_caches_gradient_in_fewer_bytes(tmp_path, text_data, tiny_teacher_dir):
    """`--encoding counts`: the same draws and weights as the q8 cache of the same recipe (so the same gradient),
    −H(p) of the live teacher in each entry's log p, fewer bytes; refused for top-k, for a flatter proposal, and for
    inclusion weights (in train and in check)."""
    sampled = {"cache_scheme": "sampled", "sample_draws": 24}
    recipe = validate_recipe(_recipe(text_data, tmp_path / "run", teacher=sampled))
    q8 = build_cache(recipe, tmp_path / "q8")
    counts = build_cache(recipe, tmp_path / "counts", encoding="counts")
    assert counts["encoding"] == "counts" and counts["record_bytes_per_token"] < q8["record_bytes_per_token"]
    examples = [0, 2, 5]
    a, b = TeacherCache.open(tmp_path / "q8").signal(examples), TeacherCache.open(tmp_path / "counts").signal(examples)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.weights, b.weights)

    log_p = _teacher_log_p(recipe, examples, temperature=2.0)
    entropy = -(log_p.exp() * log_p).sum(-1, keepdim=True).expand_as(b.logprobs)
    live = b.weights > 0
    assert torch.allclose(b.logprobs[live], -entropy[live], rtol=2e-3)

    for teacher, problem in [({"top_k": 8}, "needs teacher.cache_scheme: sampled"),
                             ({**sampled, "proposal_temperature": 2.0}, "proposal_temperature: 2")]:
        with pytest.raises(CacheError, match=problem):
            build_cache(validate_recipe(_recipe(text_data, tmp_path / "run", teacher=teacher)), tmp_path / "x",
                        encoding="counts")
    inclusion = _recipe(text_data, tmp_path / "run", teacher={**sampled, "cache": str(tmp_path / "counts"),
                                                               "sample_weights": "inclusion"})
    with pytest.raises(CacheError, match="built with --encoding counts"):
        train(validate_recipe(inclusion))
    result = run_cli("check", str(write_recipe(tmp_path / "r.yaml", inclusion)))
    assert result.returncode == 2 and "--encoding counts" in result.stderr
    train(validate_recipe(_recipe(text_data, tmp_path / "run", teacher={**sampled, "cache": str(tmp_path / "counts")})))
    assert all(0 < m["kd"] < 20 for m in read_metrics(tmp_path / "run"))


def test_a_sampled_cache_is_refused_for_what_it_cannot_estimate(tmp_path, text_data, tiny_teacher_dir):
    sampled = {"cache_scheme": "sampled", "sample_draws": 8}
    build_cache(validate_recipe(_recipe(text_data, tmp_path / "run", teacher=sampled)), tmp_path / "cache")
    cached = {**sampled, "cache": str(tmp_path / "cache")}
    reverse = _recipe(text_data, tmp_path / "run", teacher=cached, objective={"divergence": "reverse_kl"})
    with pytest.raises(CacheError, match="sampled cache: a sampled teacher signal estimates forward KL only"):
        train(validate_recipe(reverse))
    result = run_cli("check", str(write_recipe(tmp_path / "r.yaml", reverse)))
    assert result.returncode == 2 and "forward KL only" in result.stderr
    as_topk = _recipe(text_data, tmp_path / "run", teacher={"cache": str(tmp_path / "cache")})
    with pytest.raises(CacheError, match=r"teacher\.cache_scheme: 'sampled' in the cache, 'topk' in the recipe"):
        train(validate_recipe(as_topk))
    fewer = _recipe(text_data, tmp_path / "run", teacher={**cached, "sample_draws": 16})
    with pytest.raises(CacheError, match=r"teacher\.sample_draws: 8 in the cache, 16"):
        train(validate_recipe(fewer))


def test_prefetched_signals_are_the_ones_decoded_in_place(tmp_path, text_data, tiny_teacher_dir):
    """Decoding one step ahead on the background thread serves exactly the signal decoded in place; a batch that was
    not prefetched is decoded in place; stale prefetches are dropped after two steps."""
    from distill.teachers.cache.source import CachedTeacher

    recipe = validate_recipe(_recipe(text_data, tmp_path / "run"))
    build_cache(recipe, tmp_path / "cache")
    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    data = tokenize_data(recipe.data, tokenizer)
    cache = TeacherCache.open(tmp_path / "cache")
    ahead, in_place = CachedTeacher(cache, "cpu"), CachedTeacher(cache, "cpu", prefetch=False)
    micro = [[0, 1], [5, 9], [2, 3]]
    ahead.prefetch(micro[:2])
    for examples in micro:
        batch = Batch.of([data.examples[e] for e in examples], tokenizer.pad_token_id, examples)
        a, b = ahead.signal(batch), in_place.signal(batch)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.logprobs, b.logprobs)
    assert ahead.prefetched == 2 and in_place.prefetched == 0
    ahead.prefetch([[7, 8]])
    ahead.prefetch([[10, 11]])
    ahead.prefetch([[12, 13]])  # [[7, 8]] was never used: dropped
    assert set(ahead._pending) == {(10, 11), (12, 13)}
