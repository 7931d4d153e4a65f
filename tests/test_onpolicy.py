"""On-policy and hybrid distillation: the student-sampling batch source and the gkd, onpolicy and hpd objectives,
each against a plain reference written here independently of the library's formulas (per position, in float64,
from the definitions in docs/onpolicy.md), on awkward shapes, chunked and reference paths, values and gradients."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import accelerate_launch, base_recipe, kill_9_when, max_weight_difference, run_cli, write_recipe
from distill.data.formatting import IGNORE_INDEX, Example
from distill.generation.engine import Engine
from distill.generation.sampling import SamplingParams
from distill.losses import reweighted
from distill.losses.lm_head import LMHead
from distill.losses.signals import TeacherHidden, TopKSignal
from distill.models import copy_teacher_layers
from distill.objectives.registry import build_objective
from distill.recipe import validate_recipe
from distill.recipe.objective import GKDConfig, HPDConfig, OffPolicyConfig, OnPolicyConfig
from distill.teachers.source import LiveTeacher
from distill.training.metrics import read_metrics
from distill.training.student_samples import StudentSamples, is_student_row, prompt_of


# ----------------------------------------------------------------------------------------- independent references
def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


def _inverse_cdf(log_q: list[float], u: float) -> int:
    """The token a uniform picks: tokens by probability descending (ties by id), the first whose cumulative mass
    exceeds u."""
    order = sorted(range(len(log_q)), key=lambda v: (-log_q[v], v))
    cumulative = 0.0
    for v in order:
        cumulative += math.exp(log_q[v])
        if u < cumulative:
            return v
    return order[-1]


def hpd_weights_by_hand(log_q: list[float], log_p: list[float], a_star: int, a_hat: int) -> tuple[float, float]:
    """HPD's (w*, w_â) at one position, branch by branch as the authors' code writes them."""
    k1 = math.exp(log_q[a_star]) * (log_p[a_star] - log_q[a_star])
    k1_hat = math.exp(log_q[a_hat]) * (log_p[a_hat] - log_q[a_hat])
    p_star = math.exp(log_p[a_star])
    if k1 > 0 and k1_hat < 0:
        w_star = 2 * p_star + k1
    elif k1 > 0:
        w_star = p_star + k1
    else:
        w_star = k1
    w_hat = k1_hat if (k1_hat < 0 and a_hat != a_star) else 0.0
    return w_star, w_hat


def reference_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                   draws: torch.Tensor | None, kind: str, temperature: float = 1.0, beta: float = 0.5
                   ) -> torch.Tensor:
    """Σ over positions of the objective's per-position loss, from full logits with autograd; weights computed in
    plain Python floats per position (detached by construction)."""
    total = torch.zeros((), dtype=torch.float64)
    log_q_all = torch.log_softmax(student_logits.double() / temperature, -1)
    for n in range(student_logits.shape[0]):
        log_q = log_q_all[n]
        lq = log_q.tolist()
        lp = _log_softmax((teacher_logits[n].double() / temperature).tolist())
        y = int(targets[n])
        if kind == "sampled":
            total = total - (lp[y] - lq[y]) * log_q[y]
        elif kind == "hpd":
            a_hat = _inverse_cdf(lq, float(draws[n]))
            w_star, w_hat = hpd_weights_by_hand(lq, lp, y, a_hat)
            total = total - w_star * log_q[y] - w_hat * log_q[a_hat]
        elif kind == "reverse_kl":
            q = log_q.exp()
            total = total + (q * (log_q - torch.tensor(lp, dtype=torch.float64))).sum()
        elif kind == "jsd":  # generalized JSD(β) with M = βP + (1 − β)Q, as GKD's eq. 1
            p = torch.tensor(lp, dtype=torch.float64).exp()
            q = log_q.exp()
            m = beta * p + (1 - beta) * q
            total = total + beta * (p * (p.log() - m.log())).sum() + (1 - beta) * (q * (log_q - m.log())).sum()
    return total


# ------------------------------------------------------------------------------------------------- HPD by hand
def test_hpd_weights_take_every_branch_on_a_hand_made_case():
    """Five positions over four tokens, built so that each branch of w* and of w_â is taken at least once."""
    teacher = [[2.0, 0.0, 0.0, -1.0],   # a* = 0: p ≫ q → k1 > 0; â = 3, p(3) < q(3) → k1' < 0 → 2p + k1
               [2.0, 0.0, 0.0, 0.0],    # a* = 0: k1 > 0; â = 0 = a* → k1' > 0 → p + k1, w_â = 0 (â = a*)
               [-2.0, 1.0, 0.0, 0.0],   # a* = 0: p ≪ q → k1 < 0 → w* = k1; â = 0 = a* → w_â = 0
               [0.0, 3.0, 0.0, 0.0],    # a* = 0: k1 < 0 → k1; â = 2, p(2) < q(2) → k1' < 0, â ≠ a* → w_â = k1'
               [0.0, 0.0, 0.0, 2.0]]    # a* = 0: k1 < 0; â = 3, p(3) > q(3) → k1' > 0 → w_â = 0
    student = [[0.0, 0.0, 0.0, 1.5],
               [0.0, 0.0, 0.0, 0.0],
               [1.5, 0.0, 0.0, 0.0],
               [1.0, 0.0, 1.0, 0.0],
               [1.0, 0.0, 0.0, 0.0]]
    wanted_hat = [3, 0, 0, 2, 3]
    student_logits, teacher_logits = torch.tensor(student), torch.tensor(teacher)
    log_q, log_p = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    draws = []
    for n, want in enumerate(wanted_hat):  # a uniform in the middle of the wanted token's bin
        lq = log_q[n].tolist()
        order = sorted(range(4), key=lambda v: (-lq[v], v))
        before = sum(math.exp(lq[v]) for v in order[:order.index(want)])
        draws.append(before + 0.5 * math.exp(lq[want]))
    draws_t = torch.tensor(draws, dtype=torch.float64)
    targets = torch.zeros(5, dtype=torch.long)
    ids, weights, terms = reweighted.hpd(log_q, log_p, targets, draws_t)
    assert ids[:, 1].tolist() == wanted_hat
    branches = set()
    for n in range(5):
        lq, lp = log_q[n].tolist(), log_p[n].tolist()
        w_star, w_hat = hpd_weights_by_hand(lq, lp, 0, wanted_hat[n])
        assert weights[n].tolist() == pytest.approx([w_star, w_hat], abs=1e-6)
        k1 = math.exp(lq[0]) * (lp[0] - lq[0])
        k1_hat = math.exp(lq[wanted_hat[n]]) * (lp[wanted_hat[n]] - lq[wanted_hat[n]])
        branches.add(("2p+k1" if k1 > 0 and k1_hat < 0 else "p+k1" if k1 > 0 else "k1",
                      "k1'" if w_hat != 0 else ("same" if wanted_hat[n] == 0 else "k1'>=0")))
    assert {b[0] for b in branches} == {"2p+k1", "p+k1", "k1"}
    assert {b[1] for b in branches} == {"k1'", "same", "k1'>=0"}
    assert terms.tolist() == pytest.approx([weights[:, 0].sum().item(), weights[:, 1].sum().item(), 3.0], abs=1e-6)


# --------------------------------------------------------------------------- the rules' losses and gradients
@pytest.mark.parametrize("rule", ["sampled", "hpd"])
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_reweighted_loss_chunked_and_reference_match_the_plain_reference(rule, temperature):
    torch.manual_seed(3)
    n, hidden_size, vocab = 41, 19, 1271  # awkward shapes; the chunk (16) does not divide n
    hidden = torch.randn(n, hidden_size, dtype=torch.float64).float().requires_grad_()
    weight = (torch.randn(vocab + 5, hidden_size) * 0.3).requires_grad_()  # padded rows past the vocabulary
    teacher_hidden = torch.randn(n, hidden_size)
    teacher_weight = torch.randn(vocab + 5, hidden_size) * 0.3
    targets = torch.randint(0, vocab, (n,))
    draws = torch.rand(n, dtype=torch.float64)
    fn, names = {"sampled": (reweighted.sampled_reverse_kl, reweighted.SAMPLED_REVERSE_KL_TERMS),
                 "hpd": (reweighted.hpd, reweighted.HPD_TERMS)}[rule]

    expected = reference_loss((hidden @ weight.T)[:, :vocab], (teacher_hidden @ teacher_weight.T)[:, :vocab],
                              targets, draws, rule, temperature)
    g_hidden, g_weight = torch.autograd.grad(expected, [hidden, weight])

    signal = TeacherHidden(teacher_hidden, LMHead(teacher_weight))
    total, terms = reweighted.reweighted_loss(hidden, LMHead(weight), targets, signal, draws, fn, len(names),
                                              vocab_size=vocab, temperature=temperature, chunk_size=16)
    c_hidden, c_weight = torch.autograd.grad(total, [hidden, weight])
    assert total.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)
    assert torch.allclose(c_hidden, g_hidden.float(), atol=1e-5)
    assert torch.allclose(c_weight, g_weight.float(), atol=1e-5)

    logits = (hidden @ weight.T)[:, :vocab]
    ref_total, ref_terms = reweighted.reweighted_loss_reference(logits, targets, (teacher_hidden @ teacher_weight.T)
                                                                [:, :vocab], draws, fn, temperature=temperature)
    r_hidden, r_weight = torch.autograd.grad(ref_total, [hidden, weight])
    assert ref_total.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)
    assert torch.allclose(r_hidden, g_hidden.float(), atol=1e-5)
    assert torch.allclose(r_weight, g_weight.float(), atol=1e-5)
    assert torch.allclose(terms, ref_terms, rtol=1e-4, atol=1e-4)


def test_the_sampled_estimator_averages_to_the_reverse_kl_gradient():
    """E_{y~q}[−(log p − log q)(y) ∇log q(y)] = ∇ KL(q ‖ p): averaged over every token weighted by q, the sampled
    estimator's gradient is the full reverse KL's (exactly, not only in the limit)."""
    torch.manual_seed(0)
    vocab = 7
    z = torch.randn(1, vocab, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(1, vocab, dtype=torch.float64)
    full = reference_loss(z, teacher, torch.zeros(1, dtype=torch.long), None, "reverse_kl")
    (exact,) = torch.autograd.grad(full, z)
    q = torch.softmax(z.detach(), -1)[0]
    averaged = torch.zeros_like(z)
    for y in range(vocab):
        loss, _ = reweighted.reweighted_loss_reference(z, torch.tensor([y]), teacher, None,
                                                       reweighted.sampled_reverse_kl)
        averaged += q[y] * torch.autograd.grad(loss, z)[0]
    assert torch.allclose(averaged, exact, atol=1e-6)  # the loss works in fp32


def test_rules_refuse_a_top_k_teacher():
    logits = torch.randn(3, 11)
    signal = TopKSignal.from_logits(torch.randn(3, 11), 4)
    with pytest.raises(ValueError, match="whole distribution"):
        reweighted.reweighted_loss_reference(logits, torch.zeros(3, dtype=torch.long), signal, None,
                                             reweighted.sampled_reverse_kl)


# ------------------------------------------------------------------------------------- objectives on real batches
@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval().requires_grad_(False)


def _prompt_completion_examples(tokenizer, n: int) -> list[Example]:
    from distill.builtin.corpus import tiny_stories

    examples = []
    for story in tiny_stories(n, seed=5):
        words = story.split()
        prompt = tokenizer(" ".join(words[:5]))["input_ids"]
        completion = tokenizer(" " + " ".join(words[5:14]))["input_ids"] + [tokenizer.eos_token_id]
        examples.append(Example(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion))
    return examples


def _source(teacher, tokenizer, lmbda: float, *, rank: int = 0, world: int = 1, micro: int = 3, draws=False,
            student=None):
    from distill.data.dataset import BatchPlan, TokenizedData

    examples = _prompt_completion_examples(tokenizer, 24)
    data = TokenizedData(examples=examples, format="prompt_completion", dropped=0)
    plan = BatchPlan(len(examples), 6, micro, world, seed=7)
    student = student if student is not None else copy_teacher_layers(teacher, [0, 3])
    engine = Engine(student, tokenizer, max_batch_size=micro)
    return StudentSamples(data, plan, rank, tokenizer.pad_token_id, engine=engine, lmbda=lmbda,
                          params=SamplingParams(temperature=1.0, max_new_tokens=7), seed=11, with_draws=draws), student


def test_the_student_writes_an_evenly_spread_share_lambda_of_the_rows(teacher, tiny_tokenizer):
    for lmbda, share in [(0.0, 0), (0.5, 3), (1 / 3, 2), (1.0, 6)]:
        assert sum(is_student_row(g, Fraction(lmbda).limit_denominator(1 << 20)) for g in range(6)) == share
    source, _ = _source(teacher, tiny_tokenizer, 0.5)
    batches = source.micro_batches(0)
    data_rows = source.plan.step_indices(0)
    rows = [(b, r) for b in range(2) for r in range(3)]
    for g, (b, r) in enumerate(rows):
        batch, example = batches[b], source.data.examples[data_rows[g]]
        ids = batch.input_ids[r][batch.attention_mask[r].bool()].tolist()
        prompt = prompt_of(example)
        assert ids[:len(prompt)] == prompt  # the student continues the example's own prompt
        labels = batch.labels[r][: len(ids)].tolist()
        assert labels[:len(prompt)] == [IGNORE_INDEX] * len(prompt) and IGNORE_INDEX not in labels[len(prompt):]
        if g % 2 == 0:  # a data row keeps the data's completion
            assert ids == example.input_ids
    assert all(b.examples is None for b in batches)  # student text is in no cache
    assert sum(b.logged["student_share"] for b in batches) > 0
    # the same step again gives the same text: a function of (weights, seed, step, row) only
    again = source.micro_batches(0)
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(source.micro_batches(1)[0].input_ids[1], batches[0].input_ids[1])


def test_a_row_samples_the_same_text_on_one_process_or_two(teacher, tiny_tokenizer):
    """Process r at accumulation step a holds the same rows as process 0 at step a·world + r alone, and each row's
    text is keyed by its global position, so 2 processes sample what 1 does."""
    one, student = _source(teacher, tiny_tokenizer, 1.0, draws=True)
    alone = one.micro_batches(2)
    for rank in range(2):
        mine, _ = _source(teacher, tiny_tokenizer, 1.0, rank=rank, world=2, draws=True, student=student)
        (batch,) = mine.micro_batches(2)
        assert torch.equal(batch.input_ids, alone[rank].input_ids)
        assert torch.equal(batch.draws, alone[rank].draws)


def _pieces(cfg, student, teacher, batch, vocab):
    objective = build_objective(student, cfg, vocab, with_teacher=True)
    form = "hidden" if cfg.implementation == "chunked" else "logits"
    pieces = objective(batch, LiveTeacher(teacher, vocab, form).signal(batch))
    grads = torch.autograd.grad(pieces.total, [p for p in student.parameters() if p.requires_grad])
    return pieces, grads


@pytest.mark.parametrize("implementation", ["chunked", "reference"])
@pytest.mark.parametrize("case", ["gkd", "onpolicy_full", "onpolicy_sampled", "hpd"])
def test_each_objective_matches_the_plain_reference_on_student_samples(teacher, tiny_tokenizer, case,
                                                                       implementation):
    source, student = _source(teacher, tiny_tokenizer, 0.5 if case != "onpolicy_sampled" else 1.0, draws=True)
    batch = source.micro_batches(0)[1]
    vocab = len(tiny_tokenizer)
    cfg = {"gkd": GKDConfig(temperature=1.5, implementation=implementation, chunk_size=5),
           "onpolicy_full": OnPolicyConfig(estimator="full", lmbda=0.5, implementation=implementation),
           "onpolicy_sampled": OnPolicyConfig(implementation=implementation, chunk_size=5),
           "hpd": HPDConfig(lmbda=0.5, implementation=implementation, chunk_size=5)}[case]
    pieces, grads = _pieces(cfg, student, teacher, batch, vocab)

    targets, mask = batch.targets()
    with torch.enable_grad():
        s_logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1][mask]
    t_logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1][mask]
    draws = batch.draws[:, :-1][mask]
    kind = {"gkd": "jsd", "onpolicy_full": "reverse_kl", "onpolicy_sampled": "sampled", "hpd": "hpd"}[case]
    expected = reference_loss(s_logits[:, :vocab], t_logits[:, :vocab], targets[mask], draws, kind,
                              temperature=cfg.temperature)
    if case == "gkd":
        expected = expected * cfg.temperature**2  # (1 − α) · T² · D with α = 0
    expected_grads = torch.autograd.grad(expected, [p for p in student.parameters() if p.requires_grad])
    assert pieces.count == mask.sum()
    assert pieces.total.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-4)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want.float(), atol=2e-5, rtol=1e-3)


def test_gkd_at_lambda_zero_is_the_offpolicy_objective(teacher, tiny_tokenizer):
    source, student = _source(teacher, tiny_tokenizer, 0.0)
    batch = source.micro_batches(0)[0]
    assert batch.examples is not None  # the data's own rows
    vocab = len(tiny_tokenizer)
    gkd, g_grads = _pieces(GKDConfig(lmbda=0.0, alpha=0.2, temperature=2.0), student, teacher, batch, vocab)
    off, o_grads = _pieces(OffPolicyConfig(divergence="jsd", alpha=0.2, temperature=2.0), student, teacher, batch,
                           vocab)
    assert torch.equal(gkd.total, off.total) and gkd.terms.keys() == off.terms.keys()
    assert all(torch.equal(a, b) for a, b in zip(g_grads, o_grads, strict=True))


# --------------------------------------------------------------------------------------------- whole runs
@pytest.fixture()
def pc_data(tmp_path: Path) -> Path:
    from distill.builtin.corpus import tiny_stories

    path = tmp_path / "pc.jsonl"
    rows = []
    for story in tiny_stories(120, seed=4):
        words = story.split()
        rows.append({"prompt": " ".join(words[:6]), "completion": " " + " ".join(words[6:18])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(pc_data: Path, out: Path, objective: dict, **training) -> dict:
    recipe = base_recipe(pc_data, out, objective={"temperature": 1.0, **objective},
                         training={"max_steps": 6, "batch_size": 4, "micro_batch_size": 2, "save_every": 3,
                                   **training})
    if "alpha" not in objective:  # each kind's own default
        recipe["objective"].pop("alpha")
    recipe["data"].update({"format": "prompt_completion", "max_length": 40})
    return recipe


@pytest.mark.slow  # two whole runs; the objective-level equivalence above is in the default suite
def test_gkd_at_lambda_zero_trains_exactly_like_offpolicy(tmp_path, pc_data, tiny_teacher_dir):
    off = _recipe(pc_data, tmp_path / "off", {"kind": "offpolicy", "divergence": "jsd", "alpha": 0.0})
    gkd = _recipe(pc_data, tmp_path / "gkd", {"kind": "gkd", "lmbda": 0.0})
    for name, recipe in (("off", off), ("gkd", gkd)):
        result = run_cli("train", str(write_recipe(tmp_path / f"{name}.yaml", recipe)))
        assert result.returncode == 0, result.stderr
    losses = [[(m["loss"], m["kd"]) for m in read_metrics(tmp_path / name)] for name in ("off", "gkd")]
    assert losses[0] == losses[1]
    assert max_weight_difference(tmp_path / "off", tmp_path / "gkd") == 0.0


def test_kill_9_in_an_on_policy_run_then_resume_gives_bitwise_the_same_student(tmp_path, pc_data,
                                                                               tiny_teacher_dir):
    recipe = _recipe(pc_data, tmp_path / "killed", {"kind": "gkd", "lmbda": 0.5, "rollout": {"max_new_tokens": 10}},
                     max_steps=24, save_every=8, log_every=1)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    straight = run_cli("train", str(path), "--set", f"training.output_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr

    metrics = tmp_path / "killed" / "metrics.jsonl"

    def past_a_checkpoint() -> bool:  # past the checkpoint at 8 or 16, before the next one
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        return bool(lines) and json.loads(lines[-1])["step"] in (10, 11, 12, 13, 18, 19, 20, 21)

    kill_9_when(past_a_checkpoint, "train", str(path))
    assert not (tmp_path / "killed" / "student").exists()
    resumed = run_cli("train", str(path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert max_weight_difference(tmp_path / "straight", tmp_path / "killed") == 0.0, "resumed ≠ uninterrupted"
    assert [m["loss"] for m in read_metrics(tmp_path / "killed")] == [m["loss"] for m in
                                                                      read_metrics(tmp_path / "straight")]
    assert read_metrics(tmp_path / "killed")[-1]["student_share"] > 0


@pytest.mark.slow  # a 2-process launch (~1 min); rows' text across processes stays in the default suite
def test_two_processes_follow_the_one_process_on_policy_trajectory(tmp_path, pc_data, tiny_teacher_dir):
    recipe = _recipe(pc_data, tmp_path / "one", {"kind": "hpd", "lmbda": 0.5, "rollout": {"max_new_tokens": 8}})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    one = run_cli("train", str(path))
    assert one.returncode == 0, one.stderr
    two = accelerate_launch(2, "train", str(path), "--set", f"training.output_dir={tmp_path / 'two'}", port=29547)
    assert two.returncode == 0, two.stderr
    rows_one, rows_two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [m["targets"] for m in rows_one] == [m["targets"] for m in rows_two]  # the same sampled lengths
    assert [m["loss"] for m in rows_two] == pytest.approx([m["loss"] for m in rows_one], rel=1e-5, abs=1e-6)
    assert max_weight_difference(tmp_path / "one", tmp_path / "two") < 1e-5


# ------------------------------------------------------------------------------------------------ recipe checks
@pytest.mark.parametrize("objective, field, words", [
    ({"kind": "onpolicy", "divergence": "jsd"}, "objective.divergence", "estimates reverse KL only"),
    ({"kind": "onpolicy", "lmbda": 0.5}, "objective.lmbda", "tokens the student drew itself"),
    ({"kind": "hpd", "rollout": {"temperature": 0.7}}, "objective.rollout", "own distribution"),
])
def test_recipes_that_would_bias_an_estimator_are_refused(tmp_path, pc_data, objective, field, words):
    from distill.errors import RecipeError

    with pytest.raises(RecipeError, match=words) as error:
        validate_recipe(_recipe(pc_data, tmp_path / "x", objective))
    assert field in str(error.value)


def test_an_on_policy_kind_refuses_a_teacher_cache(tmp_path, pc_data):
    from distill.errors import RecipeError

    recipe = _recipe(pc_data, tmp_path / "x", {"kind": "gkd", "lmbda": 0.5})
    recipe["teacher"] = {"model": "builtin:tiny-teacher", "cache": str(tmp_path / "cache")}
    with pytest.raises(RecipeError, match="student's own completions"):
        validate_recipe(recipe)
    recipe["objective"]["lmbda"] = 0.0  # off-policy gkd reads the data's tokens, which a cache holds
    validate_recipe(recipe)


def test_on_policy_kinds_refuse_text_data(tmp_path, text_data, tiny_teacher_dir):
    recipe = base_recipe(text_data, tmp_path / "t", objective={"kind": "gkd"})
    recipe["objective"].pop("alpha")
    result = run_cli("train", str(write_recipe(tmp_path / "t.yaml", recipe)))
    assert result.returncode == 2 and "gkd" in result.stderr and "text" in result.stderr


# ------------------------------------------------------------------------------------ an API teacher, scored live
def test_an_api_teacher_scores_the_students_completions_live(tmp_path, pc_data, teacher, tiny_tokenizer,
                                                              tiny_teacher_dir):
    """The live API source gives, row by row, the top-k of the teacher's own logits on the student's text; and a
    whole gkd run (λ = 1) trains from it, the server asked once per sequence."""
    from distill.recipe.api import ApiConfig
    from distill.teachers.api.live import ApiTeacher
    from harvest_server import MODEL, ScoringServer

    server = ScoringServer(tiny_teacher_dir)
    source, _ = _source(teacher, tiny_tokenizer, 1.0)
    batch = source.micro_batches(0)[0]
    _, mask = batch.targets()
    logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1][mask]
    expected = TopKSignal.from_logits(logits[:, :len(tiny_tokenizer)], 6)  # padded embedding rows are no tokens
    with server.running() as url:
        api = ApiTeacher(ApiConfig(base_url=url, model=MODEL), tiny_tokenizer, 6)
        got = api.signal(batch)
        api.close()
        assert torch.equal(got.ids, expected.ids)
        assert torch.allclose(got.logprobs, expected.logprobs, atol=1e-4)

        recipe = _recipe(pc_data, tmp_path / "api", {"kind": "gkd", "lmbda": 1.0, "rollout": {"max_new_tokens": 6}},
                         max_steps=2, save_every=2)
        recipe["teacher"] = {"api": {"base_url": url, "model": MODEL}, "top_k": 6}
        recipe["student"] = {"model": str(tiny_teacher_dir)}
        scored_before = sum(server.prompts.values())
        result = run_cli("train", str(write_recipe(tmp_path / "api.yaml", recipe)))
    assert result.returncode == 0, result.stderr
    rows = read_metrics(tmp_path / "api")
    assert [m["student_share"] for m in rows] == [1.0, 1.0] and all(m["teacher_mass"] < 1 for m in rows)
    assert sum(server.prompts.values()) - scored_before == 2 * 4  # steps × batch_size sequences, each once
