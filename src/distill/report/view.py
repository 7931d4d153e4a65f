"""The report's view: a result (`distill.results`: an eval.json or a demo's summary.json, validated on loading) turned
into everything both templates show — models in a fixed order, intervals formatted the same way everywhere
(cells.py), paired differences put into words — so report.html and report.md cannot disagree. A section whose data
is absent is left out, not faked. Training runs are in training_runs.py, tasks in tasks.py, calibration in
calibration.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.eval.slice_order import ordered_slice_values
from distill.report import figures
from distill.report.calibration import calibration
from distill.report.cells import (
    CI,
    GAP,
    METRICS,
    NLL,
    Cell,
    Metric,
    Model,
    ci_cell,
    compare,
    diff_cell,
    human_bytes,
    human_count,
    human_seconds,
    pair,
    pair_title,
    paired_ci,
    paired_table,
    percent,
    rate,
    to_ci,
)
from distill.report.tasks import tasks
from distill.report.training_runs import training
from distill.results.schema import Contamination, DemoSummary, EvalResult, EvalSetResult, Paired, SliceEntry

# A slice of a few documents has a mean NLL that one odd document can swing by more than the gaps being compared,
# so "falls flattest" would mostly name noise: smaller slices are shown, but not ranked.
MIN_FLATTEST_DOCS = 10
ROLE_RANK = {"teacher": 0, "student": 1, "baseline": 2, "init": 3}  # then every other role, in file order
REFERENCE_ONLY = ("agreement", "kl_forward", "kl_reverse")  # measured against the reference model
Roles = dict[str, Model | None]


def build_view(result: EvalResult, run_dir: Path) -> dict[str, Any]:
    """Everything both templates show, from a loaded result (`distill.results.io.load_result`); `run_dir` is the
    result file's folder, against which the training runs' folders are resolved."""
    models = _models(result)
    by_name = {m.name: m for m in models}

    def first(role: str) -> Model | None:
        return next((m for m in models if m.role == role), None)

    reference = by_name.get(result.reference) if result.reference is not None else None
    baseline = by_name.get(result.baseline) if result.baseline is not None else None
    roles: Roles = {"reference": reference, "student": first("student"), "baseline": baseline or first("baseline"),
                    "teacher": reference or first("teacher")}
    sets = [_eval_set(n, s, models, roles, n == result.primary) for n, s in result.sets.items()]
    sets.sort(key=lambda s: not s["primary"])
    main = sets[0] if sets else None
    figs: dict[str, Any] = {"quality": None, "reliability": None, "reliability_set": None, "left_out": []}
    if main:
        cost = [m for m in models if main["nll"].get(m.name)]
        points = [figures.Point(m.label, m.color, main["nll"][m.name], m.entry.params, m.entry.score_tokens_per_s)
                  for m in cost if m.role != "init"]
        if any(p.params or p.tokens_per_s for p in points):
            figs["quality"] = figures.embed(figures.quality_vs_cost(points, main["name"]))
            figs["left_out"] = [f"{m.label} (NLL {ci_cell(main['nll'][m.name], NLL).mean})" for m in cost
                                if m.role == "init"]
        calibrated = next((s for s in sets if s["calibration"]), None)
        cal = calibration(calibrated["calibration"], models) if calibrated else []
        if cal:
            figs["reliability"] = figures.embed(figures.reliability(cal))
            figs["reliability_set"] = calibrated["name"]
    demo = result if isinstance(result, DemoSummary) else None
    prov = result.provenance.to_json()
    return {
        "kind": result.kind, "run_dir": str(run_dir), "run_name": run_dir.resolve().name,
        "models": models, "roles": roles, "sets": sets, "main": main, "figures": figs,
        "headline": _headline(main, roles, result.paired),
        "training": training(demo.training if demo else {}, models, run_dir),
        "tasks": tasks(result.tasks, models),
        "provenance": [(k, "—" if v is None else str(v)) for k, v in prov.items()], "created": prov.get("created"),
        "stages": [(k, human_seconds(v)) for k, v in (demo.wall_s if demo else {}).items()],
    }


def _models(result: EvalResult) -> list[Model]:
    """Models in display order: teacher, KD student(s), baseline, untrained copy, then the rest as listed."""
    entries = []
    for i, (name, info) in enumerate(result.models.items()):
        role = info.role
        rank = 0 if name == result.reference and role not in ROLE_RANK else 2 if name == result.baseline \
            else ROLE_RANK.get(role, 4)
        entries.append((rank, i, Model(name, info.label or name, role, entry=info)))
    models = [m for *_, m in sorted(entries, key=lambda e: e[:2])]
    colors = figures.model_colors([(m.name, m.role) for m in models])
    for m in models:
        m.color = colors[m.name]
        m.info = {"params": human_count(m.entry.params), "disk": human_bytes(m.entry.disk_bytes),
                  "score": rate(m.entry.score_tokens_per_s), "path": m.entry.path,
                  "generate": rate(m.entry.generate_tokens_per_s)}
    return models


def _eval_set(name: str, s: EvalSetResult, models: list[Model], roles: Roles, primary: bool) -> dict[str, Any]:
    shown = [m for m in models if m.name in s.metrics]
    cis = {m.name: {k.key: to_ci(s.metrics[m.name].get(k.key)) for k in METRICS} for m in shown}
    columns = [k for k in METRICS if any(cis[m.name][k.key] for m in shown)]

    def cell(m: Model, k: Metric) -> Cell:  # the reference has no agreement or KL with itself
        if m is roles["reference"] and k.key in REFERENCE_ONLY and cis[m.name][k.key] is None:
            return Cell("reference", cls="muted")
        return ci_cell(cis[m.name][k.key], k)

    rows = [{"model": m, "cells": [cell(m, k) for k in columns]} for m in shown]
    gaps = {m.name: to_ci(s.gap_recovered.get(m.name)) for m in models}
    student, teacher = roles["student"], roles["teacher"]
    nll = {m: c["nll"] for m, c in cis.items()}
    overall = None
    if student and teacher and nll.get(student.name) and nll.get(teacher.name):
        overall = nll[student.name].mean - nll[teacher.name].mean
    return {
        "name": name, "label": s.description or name, "primary": primary, "n_docs": s.n_docs,
        "n_tokens": s.n_tokens, "path": s.path, "sha256": (s.sha256 or "")[:12],
        "scored": s.scored or "—", "columns": [k.title for k in columns],
        "rows": rows, "nll": nll, "paired_raw": s.paired, "paired": paired_table(s.paired, models, METRICS),
        "gap": [{"model": m, "cell": ci_cell(gaps[m.name], GAP)} for m in models if gaps[m.name]], "gap_ci": gaps,
        "slices": _slices(s.slices, models, roles, overall),
        "contamination": _contamination(s.contamination, s.contamination_reason, name),
        "calibration": s.calibration,
    }


def _contamination(c: Contamination | None, reason: str | None, name: str) -> dict[str, str] | None:
    """The n-gram overlap between the training data and an eval set, in words; when it was not computed (training
    data given but no text readable in it), the reason, flagged: never a number, least of all 0%."""
    if c is None:
        return {"text": f"not computed: {' '.join(reason.split())}.", "cls": "warn"} if reason else None
    frac, hit, total = c.share, c.overlapping_ngrams, c.eval_ngrams
    assert frac is not None  # the schema refuses a block without one
    text = f"{percent(frac)} of {c.n:.0f}-word n-grams of the {name} set"
    text += f" ({hit:,.0f} of {total:,.0f})" if hit is not None and total else ""
    text += " occur in the training data"
    over_half, worst = c.docs_over_half, c.max_doc_fraction
    if c.docs is not None and c.docs_with_overlap is not None:
        text += f"; {c.docs_with_overlap:.0f} of {c.docs:.0f} documents have any overlap"
        text += f", {over_half:.0f} share more than half of their n-grams" if over_half else ""
        text += f" (at most {percent(worst)} of one document)" if worst else ""
    records, read = c.train_records, c.train_records_with_text
    if records is not None and read is not None and read < records:
        text += f"; only {read:,.0f} of the {records:,.0f} training records had readable text"
    return {"text": text + ".", "cls": "warn" if frac > 0.05 or over_half or (read or 0) < (records or 0) else ""}


def _slices(raw: dict[str, dict[str, SliceEntry]], models: list[Model], roles: Roles, overall_gap: float | None,
            ) -> list[dict[str, Any]]:
    """Per slice field, its values in numeric order (eval/slice_order.py): NLL per model and value, paired
    differences, and where the student trails the teacher most — among slices of at least MIN_FLATTEST_DOCS
    documents, and only when two or more are that large."""
    student, teacher = roles["student"], roles["teacher"]
    out = []
    for fld, unordered in raw.items():
        entries = {v: unordered[v] for v in ordered_slice_values(unordered)}
        nll = {v: {m.name: to_ci(e.metrics.get(m.name, {}).get("nll")) for m in models} for v, e in entries.items()}
        shown = [m for m in models if any(nll[v][m.name] for v in entries)]
        pair_keys = list(dict.fromkeys(k for e in entries.values() for k in e.paired))
        gaps = {v: n[student.name].mean - n[teacher.name].mean for v, n in nll.items()
                if student and teacher and n[student.name] and n[teacher.name]}
        ranked = {v: g for v, g in gaps.items() if (entries[v].n_docs or 0) >= MIN_FLATTEST_DOCS}
        unranked = [v for v in gaps if v not in ranked]
        flattest = max(ranked, key=ranked.__getitem__) if len(ranked) > 1 else None
        rows = []
        for v, e in entries.items():
            cells = [Cell(human_count(e.n_docs))]
            cells += [ci_cell(nll[v][m.name], NLL) for m in shown]
            cells += [diff_cell(paired_ci(e.paired, k, "nll"), pair(k, models), NLL) for k in pair_keys]
            if len(gaps) > 1:
                cells.append(Cell(f"{gaps[v]:+.2f}" if v in gaps else "—", cls="flattest" if v == flattest else ""))
            rows.append({"label": v, "cells": cells, "cls": "flattest" if v == flattest else ""})
        columns = ["docs", *(f"NLL {m.label}" for m in shown), *(pair_title(k, models) for k in pair_keys)]
        note = ""
        if len(gaps) > 1:
            assert student is not None and teacher is not None  # a gap needs both
            columns.append(f"{student.label} − {teacher.label}")
            note = _flattest_note(fld, flattest, ranked, unranked, student, teacher, overall_gap)
        plotted = [m for m in shown if m.role != "init"]  # an untrained model's NLL would flatten every other dot
        series = [(m.label, m.color, [nll[v][m.name] for v in entries]) for m in plotted]
        shade = None if flattest is None else list(entries).index(flattest)
        png = figures.slice_dots(fld, list(entries), series, shade)
        out.append({"field": fld, "columns": columns, "rows": rows, "note": note, "figure": figures.embed(png),
                    "left_out": [m.label for m in shown if m not in plotted]})
    return out


def _flattest_note(fld: str, flattest: str | None, ranked: dict[str, float], unranked: list[str], student: Model,
                   teacher: Model, overall_gap: float | None) -> str:
    """Where the student falls flattest, in words, saying which slices were too small to be ranked."""
    small = f"slices under {MIN_FLATTEST_DOCS} documents are not ranked ({', '.join(unranked)})" if unranked else ""
    if flattest is None:
        return (f"No {fld} is singled out: {small}, and fewer than two are that large." if small else "")
    every = f"every {fld}" + (f" of {MIN_FLATTEST_DOCS} documents or more" if unranked else "")
    if ranked[flattest] <= 0:
        note = f"{student.label} is level with or ahead of {teacher.label} on {every}."
    else:
        note = (f"{student.label} falls flattest on {fld} = {flattest}: {ranked[flattest]:.2f} nats/token behind "
                f"{teacher.label}" + (f", against {overall_gap:.2f} on the whole set." if overall_gap else "."))
    return note + (f" {small[0].upper()}{small[1:]}." if small else "")


def _headline(main: dict[str, Any] | None, roles: Roles, fallback_paired: Paired) -> str:
    """One sentence: the KD student against the no-distillation baseline on the primary set, in words."""
    student, baseline, teacher = roles["student"], roles["baseline"], roles["teacher"]
    if main is None:
        return "No evaluation sets in this summary."
    paired = main["paired_raw"] or fallback_paired
    if student and baseline:
        ci = paired_ci(paired, f"{student.name}_minus_{baseline.name}", "nll")
        if ci is None and (flip := paired_ci(paired, f"{baseline.name}_minus_{student.name}", "nll")):
            ci = CI(-flip.mean, -flip.high, -flip.low)
        if ci is not None:
            text = compare(student.label, baseline.label, ci, NLL)[0]
            if teacher and (gap := main["gap_ci"].get(student.name)):
                cell = ci_cell(gap, GAP)
                text += f", recovering {cell.mean}% {cell.ci} of the gap between {baseline.label} and {teacher.label}"
            return f"On {main['label']}, {text}."
    nll = main["nll"]
    if student and teacher and nll.get(student.name) and nll.get(teacher.name):
        return (f"On {main['label']}, {student.label} reaches an NLL of {ci_cell(nll[student.name], NLL).text} "
                f"nats/token against {ci_cell(nll[teacher.name], NLL).text} for {teacher.label}.")
    return f"{len(nll)} models scored on {main['label']}."
