"""The names of what distill writes into a folder: the one place they are spelled.

A training run folder (`training.output_dir`) holds the marker, the resolved recipe, the metrics log and its
TensorBoard mirror, the checkpoints and, once finished, the student. A result folder holds `eval.json` (from
`distill eval`) and the demo's `summary.json`, and the report rendered from them. The demo's folder holds both: a
training run per student (named after the model), the untrained copy and the result files.
"""

from __future__ import annotations

from distill.atomic import temporary_name

# ---- a training run folder -------------------------------------------------------------------------------------
MARKER = ".distill-run"  # written first: what makes a folder recognisably one of our runs
RECIPE = "recipe.yaml"  # the resolved recipe (also inside every checkpoint)
METRICS = "metrics.jsonl"  # one JSON line per logged step (results/metrics.py)
METRICS_TMP = METRICS + ".tmp"  # the metrics log while it is cut back on resume
STUDENT = "student"  # the final student, a plain Hugging Face folder
STUDENT_TMP = temporary_name(STUDENT)  # the student while it is written, renamed into place when complete
CHECKPOINTS = "checkpoints"  # step-NNNNNNNN/ folders (training/checkpoint.py)
TENSORBOARD = "tensorboard"
BEST = "best"  # training.keep_best: the best student so far, with best.json (training/validation.py)
BEST_TMP = temporary_name(BEST)
BEST_JSON = "best.json"  # in BEST: the metric, its value and the step of the kept student
# what a run writes at the top of its folder; CHECKPOINTS is cleared of distill's checkpoints only (run_dir.py)
RUN_ENTRIES = (MARKER, RECIPE, METRICS, METRICS_TMP, STUDENT, STUDENT_TMP, TENSORBOARD, BEST, BEST_TMP)

# ---- result files and the report -------------------------------------------------------------------------------
EVAL = "eval.json"  # `distill eval --out`'s default name; the demo's evaluation (results/schema.py: EvalResult)
SUMMARY = "summary.json"  # the demo's result: the evaluation plus training facts (results/schema.py: DemoSummary)
RESULT_FILES = (SUMMARY, EVAL)  # what `distill report DIR` renders, in this order: summary.json says more
REPORT_HTML = "report.html"
REPORT_MD = "report.md"

# ---- the demo's folder (besides a training run per student and the result files) -------------------------------
DEMO_INIT = "init"  # the copied student before training: the "untrained copy"
INIT_LAYERS = "layers.json"  # in DEMO_INIT: the teacher and layers it was copied from, to know when to rebuild it
