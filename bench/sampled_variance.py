"""Where a sampled cache's gradient noise could be cut: the variance of three unbiased estimates of the teacher's
distribution p, per draw, on the demo's teacher and data.

The forward-KL gradient with respect to the student's logits is q − p; a sampled cache replaces p by an estimate p̂
with E[p̂] = p, and the gradient's noise is the total variance Σ_v Var p̂_v. Three estimates, each from draws of the
teacher at t = 1 (see losses/sampled.py and docs/cache.md):

  plain       the draw frequencies (the cache's count weights): N · Var = Σ_v p_v (1 − p_v).
  head k      the top-k stored exactly, the tail (mass M) sampled on its own: N_tail · Var = Σ_tail p_v (M − p_v).
              Stratification; it is what inclusion weights already approximate (they remove the head's variance).
  student cv  the head exact, and the tail as the student's own tail distribution scaled to M plus an importance-
              weighted correction from the tail draws: p̂_v = c_v + (M/N) Σ_j 1{x_j = v} (1 − c_{x_j} / p_{x_j}),
              c = M · q_tail / Q_tail. Unbiased for any c; N · Var = M Σ_tail (p_v − c_v)² / p_v − Σ (p_v − c_v)².
              It only helps where the student's tail already looks like the teacher's.

The student is the demo's (the teacher's layers 0, 6, 12, 18, 24, 29) as initialised, or a trained one
(`--student DIR`, e.g. a `bench/cache.py` run's `live/student`). Output: one JSON line per (student, k), then a
summary with the ratios to `plain`.

    python bench/sampled_variance.py --student runs/bench-cache/live/student
"""

from __future__ import annotations

import argparse

import torch

from harness import emit, provenance


def variances(log_p: torch.Tensor, log_q: torch.Tensor, k: int) -> dict[str, float]:
    """Per-draw total variances (means over positions) of the three estimates, with k exact head tokens."""
    p, q = log_p.exp(), log_q.exp()
    tail = torch.ones_like(p, dtype=torch.bool)
    if k:
        tail.scatter_(-1, p.topk(k, -1).indices, False)
    p_t, q_t = torch.where(tail, p, 0.0), torch.where(tail, q, 0.0)
    mass = p_t.sum(-1, keepdim=True)
    c = mass * q_t / q_t.sum(-1, keepdim=True)
    d = p_t - c
    cv = (mass * torch.where(tail, d**2 / p_t.clamp_min(1e-38), 0.0)).sum(-1) - (d**2).sum(-1)
    return {"tail_mass": mass.mean().item(), "plain": (p * (1 - p)).sum(-1).mean().item(),
            "head": ((mass * p_t).sum(-1) - (p_t**2).sum(-1)).mean().item(),
            "student_cv": cv.mean().item(), "student_cv_median": cv.median().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", help="a trained student folder (default: the demo's student as initialised)")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--heads", default="0,8,16", help="exact head sizes k")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from distill.data.dataset import tokenize_data
    from distill.demo.plan import DemoOptions, recipe_for
    from distill.models import build_student, load_teacher, load_tokenizer

    recipe = recipe_for(DemoOptions(), "kd")
    tokenizer = load_tokenizer("tokenizer", *recipe.tokenizer_options())
    data = tokenize_data(recipe.data, tokenizer)
    teacher = load_teacher(recipe.teacher).eval()
    students = {"initialised": build_student(recipe, tokenizer, teacher).eval()}
    if args.student:
        students["trained"] = AutoModelForCausalLM.from_pretrained(args.student).eval()
    ids = torch.tensor([data.examples[i].input_ids for i in range(0, 16 * args.sequences, 16)])
    rows = []
    with torch.no_grad():
        log_p = torch.log_softmax(teacher(ids).logits.float(), -1).flatten(0, 1)
        for name, student in students.items():
            log_q = torch.log_softmax(student(ids).logits.float(), -1).flatten(0, 1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
            for k in (int(x) for x in args.heads.split(",")):
                row = {"bench": "sampled_variance", "student": name, "kl": kl, "k": k, **variances(log_p, log_q, k)}
                rows.append(row)
                emit(row)
    emit({"summary": "sampled_variance", "positions": int(log_p.shape[0]),
          "head_over_plain": {f"{r['student']}-k{r['k']}": r["head"] / r["plain"] for r in rows},
          "student_cv_over_plain": {f"{r['student']}-k{r['k']}": r["student_cv"] / r["plain"] for r in rows},
          "provenance": provenance()})


if __name__ == "__main__":
    main()
