"""The demo's evaluation: the four models on held-out text (in domain and out of domain) and on verifiable tasks,
through the same suite `distill eval` runs."""

from __future__ import annotations

from pathlib import Path

from distill.demo.plan import DemoOptions
from distill.eval.eval_set import load_eval_set
from distill.eval.suite import ModelEntry, Suite, run_suite
from distill.eval.training_text import recipe_training_texts
from distill.recipe import Recipe
from distill.results.schema import DEMO_KIND, EvalResult

LABELS = {"teacher": ("teacher", "Teacher"), "kd": ("student", "KD student"),
          "baseline": ("baseline", "Baseline (no KD)"), "init": ("init", "Untrained copy")}


def evaluate_demo(options: DemoOptions, paths: dict[str, Path | str], recipes: dict[str, Recipe]) -> EvalResult:
    models = [ModelEntry(name, str(paths[name]), *LABELS[name]) for name in ("teacher", "kd", "baseline", "init")]
    sets = [load_eval_set(options.heldout, name="heldout", slice_fields=["source"], max_docs=options.eval_docs,
                          seed=options.seed,
                          description="passages of works never trained on (Macbeth, Twelfth Night, Henry V, "
                                      "The Tempest, the Sonnets)")]
    if options.ood:
        sets.append(load_eval_set(options.ood, name="ood", max_docs=options.ood_docs, seed=options.seed,
                                  description="out of domain: maths word problems with worked solutions"))
    train_texts = recipe_training_texts(recipes["kd"].data)
    suite = Suite(models=models, sets=sets, reference="teacher", baseline="baseline",
                  pairs=[("kd", "baseline"), ("kd", "init"), ("baseline", "init")],
                  tasks=[(task, options.task_n) for task in options.tasks], train_texts=train_texts,
                  max_length=options.max_length * 2, seed=options.seed)
    return run_suite(suite).model_copy(update={"kind": DEMO_KIND})
