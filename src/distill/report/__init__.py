"""`distill report RUN_DIR`: a readable account of a run, built only from its result files.

The report is a separate step from evaluation on purpose: it reads `summary.json` and the training runs'
`metrics.jsonl` — never models or model code — so it is fast, can be regenerated anywhere (a laptop without the
checkpoints), and can only say what the evaluation actually measured. `render.write_report` writes `report.html`
(one self-contained file: inline CSS, figures as data URIs, no scripts, no network) and `report.md` (the same
numbers as tables), both from the one view `view.build_view` makes of the result (with `cells` and
`sections`). `figures` draws the plots with matplotlib. Result files are read through `distill.results`.
"""
