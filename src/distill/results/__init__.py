"""Results are data: what distill writes into a run or result folder, named once (`layout`), shaped once (`schema`:
eval.json and summary.json; `metrics`: a metrics.jsonl row), with one reader and one writer per file kind (`io`,
`metrics`) and where each result came from (`provenance`).

A ground-floor layer: training, eval, the demo and the report import it; it imports nothing of distill but
`distill.errors`, `distill.atomic` and the version, and nothing heavy (pydantic and the standard library). Import
from the modules (`from distill.results.layout import STUDENT`): this file imports nothing, so the CLI can name a
file without loading pydantic.
"""
