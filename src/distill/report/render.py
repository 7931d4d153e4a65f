"""Turn `RUN_DIR/summary.json` (or `eval.json`) into `report.html` (one self-contained file) and `report.md`.

Everything shown comes from result files: summary.json (schema version 1) — or, for a plain `distill eval`, its
eval.json, the same format without the training facts — and the metrics.jsonl of each training run it names. This
module turns them into one view — models in a fixed order, intervals formatted the same way everywhere, paired
differences put into words — that both templates (`report.html.j2`, `report.md.j2`, next to
this file) render, so the two reports cannot disagree. A section whose data is absent is left out, not faked; a
field with the wrong shape is a DataError naming the field, not a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from distill.errors import DataError
from distill.report import figures

SCHEMA_VERSION = 1
RESULT_FILES = ("summary.json", "eval.json")  # in this order: a demo folder holds both, and summary.json says more
ROLE_RANK = {"teacher": 0, "student": 1, "baseline": 2, "init": 3}  # then every other role, in file order
REFERENCE_ONLY = ("agreement", "kl_forward", "kl_reverse")  # measured against the reference model
ZERO_ACCURACY = 0.02  # at or below this a task score is called "about zero" in words, not left to the table
TIME_KEYS = ("wall_s", "elapsed_s", "time_s", "time", "timestamp")  # metrics.jsonl has none of these by default
N_EXAMPLES = 3


class CI(NamedTuple):
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # table header
    name: str  # in prose
    unit: str  # of a difference, in prose
    scale: float = 1.0  # 100 shows a fraction as a percentage
    decimals: int = 2
    lower_is_better: bool = True


METRICS = [Metric("nll", "NLL", "NLL", "nats/token"), Metric("ppl", "perplexity", "perplexity", "", decimals=1),
           Metric("top1_acc", "top-1 acc. %", "top-1 accuracy", "points", 100, 1, False),
           Metric("ece", "ECE %", "calibration error", "points", 100, 1),
           Metric("agreement", "agreement %", "agreement", "points", 100, 1, False),
           Metric("kl_forward", "KL(ref‖model)", "forward KL", "nats/token", decimals=3),
           Metric("kl_reverse", "KL(model‖ref)", "reverse KL", "nats/token", decimals=3)]
NLL = METRICS[0]
ACCURACY = Metric("accuracy", "accuracy %", "accuracy", "points", 100, 1, False)
GAP = Metric("gap_recovered", "gap recovered %", "gap recovered", "points", 100, 0, False)


@dataclass
class Cell:
    """A table cell: `mean` and `ci` are shown side by side (`5.71 [5.62, 5.80]`); `cls` marks significance."""

    mean: str
    ci: str = ""
    cls: str = ""

    @property
    def text(self) -> str:
        return f"{self.mean} {self.ci}".strip()


@dataclass
class Model:
    name: str
    label: str
    role: str
    color: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class _Malformed(Exception):
    """A field of summary.json has the wrong shape; `write_report` turns it into a DataError naming the file."""

    def __init__(self, where: str, expected: str):
        super().__init__(f"{where} should be {expected}")


# ---- reading ---------------------------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Malformed(where, "an object")
    return value


def _dig(value: Any, where: str, *keys: str) -> Any:
    """value[k1][k2]…, None where a key is missing; a non-object on the way is malformed."""
    for key in keys:
        value = _obj(value, where).get(key)
        where = f"{where}.{key}"
    return value


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _ci(value: Any, where: str, *keys: str) -> CI | None:
    """The interval at value[keys…]; None when absent or not finite (shown as "—", never as a number)."""
    value = _dig(value, where, *keys)
    if value is None:
        return None
    where = ".".join((where, *keys))
    if not isinstance(value, dict) or any(k not in value for k in ("mean", "ci_low", "ci_high")):
        raise _Malformed(where, 'an interval {"mean", "ci_low", "ci_high"}')
    parts = [value[k] for k in ("mean", "ci_low", "ci_high")]
    if parts[1] is None and parts[2] is None and _num(parts[0]) is not None:  # one document: a value, no interval
        return CI(float(parts[0]), math.nan, math.nan)
    if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in parts):
        raise _Malformed(where, "an interval of numbers")
    return CI(*map(float, parts)) if all(math.isfinite(p) for p in parts) else None


def result_file(run_dir: Path) -> Path:
    """The result file to render: `run_dir` itself when it is a file, else its summary.json (a demo run, with the
    training facts), else its eval.json (`distill eval --out DIR/eval.json`, which has none: those sections are
    left out)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    found = next((run_dir / name for name in RESULT_FILES if (run_dir / name).is_file()), None)
    if found is None:
        raise DataError(f"{run_dir}: no summary.json or eval.json there; run `distill demo` or "
                        "`distill eval --out DIR/eval.json` first, or pass the folder or the result file itself")
    return found


def load_summary(run_dir: Path) -> dict[str, Any]:
    """Read and check the top level of the result file (see `result_file`); deeper fields are checked as they are
    used."""
    path = result_file(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); regenerate it with `distill eval`") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} should hold a JSON object, not {type(data).__name__}; regenerate it with "
                        "`distill eval`")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {data.get('schema_version')!r} but this distill reads version "
                        f"{SCHEMA_VERSION}; regenerate it with this version's `distill eval`")
    if not isinstance(data.get("models"), dict) or not data["models"]:
        raise DataError(f"{path} lists no models; regenerate it with `distill eval`")
    return data


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """The logged steps of a training run; unreadable lines (a run killed mid-write) are skipped, not fatal."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and _num(row.get("step")) is not None:
            rows.append(row)
    return rows


# ---- formatting ------------------------------------------------------------------------------------------------


def _decimals(metric: Metric, ci: CI) -> int:
    """The metric's usual precision, raised until the interval's half-width shows (±0.004 → 3 decimals)."""
    if abs(ci.mean * metric.scale) >= 1000:
        return 0
    half = (ci.high - ci.low) * metric.scale / 2
    return max(metric.decimals, min(4, math.ceil(-math.log10(half)))) if half > 0 else metric.decimals


def ci_cell(ci: CI | None, metric: Metric, *, signed: bool = False) -> Cell:
    if ci is None:
        return Cell("—")
    d, s = _decimals(metric, ci), metric.scale
    if math.isnan(ci.low):
        return Cell(f"{ci.mean * s:{'+' if signed else ''}.{d}f}", "(no interval: 1 document)")
    return Cell(f"{ci.mean * s:{'+' if signed else ''}.{d}f}", f"[{ci.low * s:.{d}f}, {ci.high * s:.{d}f}]")


def compare(a: str, b: str, ci: CI, metric: Metric) -> tuple[str, str]:
    """(sentence, verdict) for a paired difference a − b: who beat whom and by how much, or that the 95% interval
    cannot tell them apart. The verdict is from a's side: "better", "worse", or "" when the interval includes 0."""
    d, s = _decimals(metric, ci), metric.scale
    if ci.low <= 0 <= ci.high:
        return (f"no detectable difference between {a} and {b} on {metric.name} ({ci.mean * s:+.{d}f} {metric.unit}, "
                f"95% CI [{ci.low * s:.{d}f}, {ci.high * s:.{d}f}])", "")
    a_better = (ci.mean < 0) == metric.lower_is_better
    winner, loser = (a, b) if a_better else (b, a)
    low, high = sorted((abs(ci.low) * s, abs(ci.high) * s))
    return (f"{winner} beat {loser} on {metric.name} by {abs(ci.mean) * s:.{d}f} {metric.unit}, "
            f"95% CI [{low:.{d}f}, {high:.{d}f}]", "better" if a_better else "worse")


def human_count(n: float | None) -> str:
    if n is None:
        return "—"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for div, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%" if fraction < 0.01 else f"{100 * fraction:.1f}%"


# ---- the view --------------------------------------------------------------------------------------------------


def _models(summary: dict[str, Any]) -> list[Model]:
    """Models in display order: teacher, KD student(s), baseline, untrained copy, then the rest as listed."""
    ref, base = summary.get("reference"), summary.get("baseline")
    entries = []
    for i, (name, raw) in enumerate(summary["models"].items()):
        info = _obj(raw, f"models.{name}")
        role = str(info.get("role") or "model")
        rank = 0 if name == ref and role not in ROLE_RANK else 2 if name == base else ROLE_RANK.get(role, 4)
        entries.append((rank, i, Model(name, str(info.get("label") or name), role, info=info)))
    models = [m for *_, m in sorted(entries, key=lambda e: e[:2])]
    colors = figures.model_colors([(m.name, m.role) for m in models])
    for m in models:
        m.color = colors[m.name]
    return models


def _pair(key: str, models: list[Model]) -> tuple[Model, Model] | None:
    """Split "<a>_minus_<b>" against the known names (names may themselves contain underscores)."""
    return next(((a, b) for a in models for b in models if key == f"{a.name}_minus_{b.name}"), None)


def _diff_cell(ci: CI | None, pair: tuple[Model, Model] | None, metric: Metric) -> Cell:
    cell = ci_cell(ci, metric, signed=True)
    if ci is not None and pair and (verdict := compare(pair[0].label, pair[1].label, ci, metric)[1]):
        cell.cls = f"sig-{verdict}"
    return cell


def _pair_title(key: str, models: list[Model]) -> str:
    return f"{p[0].label} − {p[1].label}" if (p := _pair(key, models)) else key


def _paired(raw: dict[str, Any], models: list[Model], metrics: list[Metric], where: str) -> dict[str, Any]:
    """Table of paired differences (columns: the metrics present) and, for the first metric, the verdicts in words."""
    columns = [m for m in metrics if any(m.key in _obj(v, where) for v in raw.values())]
    rows, sentences = [], []
    for key in raw:
        pair = _pair(key, models)
        cis = [_ci(raw, where, key, m.key) for m in columns]
        rows.append({"label": _pair_title(key, models), "cells": [_diff_cell(c, pair, m) for c, m in zip(cis, columns,
                                                                                                         strict=True)]})
        if pair and columns and columns[0] is metrics[0] and cis[0] is not None:
            text, verdict = compare(pair[0].label, pair[1].label, cis[0], metrics[0])
            sentences.append({"text": text[0].upper() + text[1:] + ".", "cls": verdict})
    return {"columns": [m.title for m in columns], "rows": rows, "sentences": sentences}


def _contamination(raw: Any, reason: Any, name: str, where: str) -> dict[str, str] | None:
    """The n-gram overlap between the training data and an eval set, in words; when it was not computed (training
    data given but no text readable in it), the reason, flagged: never a number, least of all 0%."""
    c = _obj(raw, where)
    if not c:
        return {"text": f"not computed: {' '.join(str(reason).split())}.", "cls": "warn"} if reason else None
    n, total, hit, frac = (_num(c.get(k)) for k in ("n", "eval_ngrams", "overlapping_ngrams", "fraction"))
    frac = frac if frac is not None else hit / total if hit is not None and total else None
    if frac is None or n is None:
        raise _Malformed(where, "an object with n and fraction (or eval_ngrams and overlapping_ngrams)")
    text = f"{_percent(frac)} of {n:.0f}-word n-grams of the {name} set"
    text += f" ({hit:,.0f} of {total:,.0f})" if hit is not None and total else ""
    text += " occur in the training data"
    docs, touched, over_half, worst = (_num(c.get(k)) for k in ("docs", "docs_with_overlap", "docs_over_half",
                                                                 "max_doc_fraction"))
    if docs is not None and touched is not None:
        text += f"; {touched:.0f} of {docs:.0f} documents have any overlap"
        text += f", {over_half:.0f} share more than half of their n-grams" if over_half else ""
        text += f" (at most {_percent(worst)} of one document)" if worst else ""
    records, read = _num(c.get("train_records")), _num(c.get("train_records_with_text"))
    if records is not None and read is not None and read < records:
        text += f"; only {read:,.0f} of the {records:,.0f} training records had readable text"
    return {"text": text + ".", "cls": "warn" if frac > 0.05 or over_half or (read or 0) < (records or 0) else ""}


def _slices(raw: dict[str, Any], models: list[Model], roles: dict[str, Model | None], overall_gap: float | None,
            where: str) -> list[dict[str, Any]]:
    """Per slice field: NLL per model and value, paired differences, and where the student trails the teacher most."""
    student, teacher = roles["student"], roles["teacher"]
    out = []
    for fld, values in raw.items():
        entries = {str(v): e for v, e in _obj(values, f"{where}.{fld}").items()}
        at = f"{where}.{fld}"
        nll = {v: {m.name: _ci(e, f"{at}.{v}", "metrics", m.name, "nll") for m in models} for v, e in entries.items()}
        shown = [m for m in models if any(nll[v][m.name] for v in entries)]
        pair_keys = list(dict.fromkeys(k for v, e in entries.items() for k in _obj(_dig(e, f"{at}.{v}", "paired"), at)))
        gaps = {v: n[student.name].mean - n[teacher.name].mean for v, n in nll.items()
                if student and teacher and n[student.name] and n[teacher.name]}
        flattest = max(gaps, key=gaps.__getitem__) if len(gaps) > 1 else None
        rows = []
        for v, e in entries.items():
            cells = [Cell(human_count(_num(_dig(e, f"{at}.{v}", "n_docs"))))]
            cells += [ci_cell(nll[v][m.name], NLL) for m in shown]
            cells += [_diff_cell(_ci(e, f"{at}.{v}", "paired", k, "nll"), _pair(k, models), NLL) for k in pair_keys]
            if flattest is not None:
                cells.append(Cell(f"{gaps[v]:+.2f}" if v in gaps else "—", cls="flattest" if v == flattest else ""))
            rows.append({"label": v, "cells": cells, "cls": "flattest" if v == flattest else ""})
        columns = ["docs", *(f"NLL {m.label}" for m in shown), *(_pair_title(k, models) for k in pair_keys)]
        note = ""
        if flattest is not None:
            columns.append(f"{student.label} − {teacher.label}")
            note = (f"{student.label} falls flattest on {fld} = {flattest}: {gaps[flattest]:.2f} nats/token behind "
                    f"{teacher.label}" + (f", against {overall_gap:.2f} on the whole set." if overall_gap else "."))
            if gaps[flattest] <= 0:
                note = f"{student.label} is level with or ahead of {teacher.label} on every {fld}."
        plotted = [m for m in shown if m.role != "init"]  # an untrained model's NLL would flatten every other dot
        series = [(m.label, m.color, [nll[v][m.name] for v in entries]) for m in plotted]
        shade = None if flattest is None else list(entries).index(flattest)
        png = figures.slice_dots(fld, list(entries), series, shade)
        out.append({"field": fld, "columns": columns, "rows": rows, "note": note, "figure": figures.embed(png),
                    "left_out": [m.label for m in shown if m not in plotted]})
    return out


def _eval_set(name: str, raw: Any, models: list[Model], roles: dict[str, Model | None], primary: bool,
              ) -> dict[str, Any]:
    where = f"sets.{name}"
    s = _obj(raw, where)
    scores = _obj(s.get("metrics"), f"{where}.metrics")
    shown = [m for m in models if m.name in scores]
    cis = {m.name: {k.key: _ci(scores, f"{where}.metrics", m.name, k.key) for k in METRICS} for m in shown}
    columns = [k for k in METRICS if any(cis[m.name][k.key] for m in shown)]
    def cell(m: Model, k: Metric) -> Cell:  # the reference has no agreement or KL with itself
        if m is roles["reference"] and k.key in REFERENCE_ONLY and cis[m.name][k.key] is None:
            return Cell("reference", cls="muted")
        return ci_cell(cis[m.name][k.key], k)

    rows = [{"model": m, "cells": [cell(m, k) for k in columns]} for m in shown]
    gaps = {m.name: _ci(s, where, "gap_recovered", m.name) for m in models}
    student, teacher = roles["student"], roles["teacher"]
    nll = {m: c["nll"] for m, c in cis.items()}
    overall = None
    if student and teacher and nll.get(student.name) and nll.get(teacher.name):
        overall = nll[student.name].mean - nll[teacher.name].mean
    return {
        "name": name, "label": str(s.get("description") or name), "primary": primary,
        "n_docs": _num(s.get("n_docs")), "n_tokens": _num(s.get("n_tokens")), "path": s.get("path"),
        "sha256": str(s.get("sha256") or "")[:12], "columns": [k.title for k in columns], "rows": rows, "nll": nll,
        "paired_raw": _obj(s.get("paired"), f"{where}.paired"),
        "paired": _paired(_obj(s.get("paired"), f"{where}.paired"), models, METRICS, f"{where}.paired"),
        "gap": [{"model": m, "cell": ci_cell(gaps[m.name], GAP)} for m in models if gaps[m.name]], "gap_ci": gaps,
        "slices": _slices(_obj(s.get("slices"), f"{where}.slices"), models, roles, overall, f"{where}.slices"),
        "contamination": _contamination(s.get("contamination"), s.get("contamination_reason"), name,
                                        f"{where}.contamination"),
        "calibration": _obj(s.get("calibration"), f"{where}.calibration"),
    }


def _headline(main: dict[str, Any] | None, roles: dict[str, Model | None], fallback_paired: dict[str, Any]) -> str:
    """One sentence: the KD student against the no-distillation baseline on the primary set, in words."""
    student, baseline, teacher = roles["student"], roles["baseline"], roles["teacher"]
    if main is None:
        return "No evaluation sets in this summary."
    paired = main["paired_raw"] or fallback_paired
    if student and baseline:
        ci = _ci(paired, "paired", f"{student.name}_minus_{baseline.name}", "nll")
        if ci is None and (flip := _ci(paired, "paired", f"{baseline.name}_minus_{student.name}", "nll")):
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


def _curves(runs: list[tuple[Model, list[dict[str, Any]]]]) -> str:
    """Loss and CE against step (and loss against wall time if the lines carry a time) as one PNG data URI."""
    def series(key: str, x_key: str = "step") -> list[figures.Series]:
        out = []
        for m, steps in runs:
            pts = [(x, y) for r in steps
                   if (x := _num(r.get(x_key))) is not None and (y := _num(r.get(key))) is not None]
            if pts and x_key != "step":
                pts = [(x - pts[0][0], y) for x, y in pts]  # absolute timestamps or elapsed: both start at 0
            if pts:
                out.append(figures.Series(m.label, m.color, [p[0] for p in pts], [p[1] for p in pts]))
        return out

    panels = [("training objective", "step", "loss", series("loss"))]
    if ce := series("ce"):
        panels.append(("cross-entropy on training batches", "step", "CE (nats/token)", ce))
    if by_time := next((s for key in TIME_KEYS if (s := series("loss", key))), None):
        panels.append(("training objective vs wall time", "seconds", "loss", by_time))
    return figures.embed(figures.line_panels(panels))


def _training(raw: dict[str, Any], models: list[Model], base: Path) -> dict[str, Any]:
    """Per training run: a summary row, its recipe, and its curves from `<run_dir>/metrics.jsonl`."""
    by_name = {m.name: m for m in models}
    extra = [Model(n, n, "model", figures.OTHER_COLORS[i % len(figures.OTHER_COLORS)])
             for i, n in enumerate(n for n in raw if n not in by_name)]
    rows, recipes, notes, runs = [], [], [], []
    for m in [m for m in models if m.name in raw] + extra:
        run = _obj(raw[m.name], f"training.{m.name}")
        steps: list[dict[str, Any]] = []
        if run.get("run_dir"):
            path = base / str(run["run_dir"]) / "metrics.jsonl"  # relative to the summary's folder, or absolute
            if path.is_file():
                steps = read_metrics_jsonl(path)
                runs += [(m, steps)] if steps else []
            else:
                notes.append(f"{m.label}: no metrics.jsonl at {path}, so no curve.")
        last = steps[-1] if steps else {}
        speeds = sorted(v for r in steps if (v := _num(r.get("tokens_per_s"))) is not None)
        rows.append({"model": m, "cells": [
            human_count(_num(run.get("steps")) or _num(last.get("step"))),
            human_count(_num(run.get("tokens")) or _num(last.get("tokens_seen"))),
            human_seconds(_num(run.get("wall_s"))),
            *(f"{v:.3f}" if (v := _num(last.get(k))) is not None else "—" for k in ("loss", "ce")),
            _rate(speeds[len(speeds) // 2] if speeds else None)]})
        if isinstance(run.get("recipe"), str) and run["recipe"].strip():
            recipes.append({"model": m, "yaml": run["recipe"].rstrip()})
    if not rows:
        return {}
    return {"rows": rows, "recipes": recipes, "notes": notes, "figure": _curves(runs) if runs else None}


def _tasks(raw: dict[str, Any], models: list[Model]) -> list[dict[str, Any]]:
    """Per task: accuracy with CIs, an honest note for a model that scores about zero, and a few generations."""
    out = []
    for name, task in raw.items():
        where = f"tasks.{name}"
        task = _obj(task, where)
        scores = _obj(task.get("models"), f"{where}.models")
        rows, notes, examples = [], [], []
        for m in [m for m in models if m.name in scores]:
            ci = _ci(scores, f"{where}.models", m.name, "accuracy")
            rows.append({"model": m, "cell": ci_cell(ci, ACCURACY)})
            if ci is not None and ci.mean <= ZERO_ACCURACY:
                notes.append(f"{m.label} scores about zero on {name} ({ci.mean:.0%}): it does not do this task at all, "
                             "so its row measures failure, not partial skill.")
            found = _dig(scores, f"{where}.models", m.name, "examples") or []
            if not isinstance(found, list):
                raise _Malformed(f"{where}.models.{m.name}.examples", "a list")
            items = [_obj(e, f"{where}.models.{m.name}.examples") for e in found[:N_EXAMPLES]]
            if items:
                examples.append({"model": m, "items": [
                    {**{k: _clip(e.get(k)) for k in ("question", "expected", "output", "extracted", "score")},
                     "passed": (_num(e.get("score")) or 0) > 0} for e in items]})
        out.append({"name": name, "description": str(task.get("description") or ""), "n": _num(task.get("n")),
                    "version": task.get("version"), "rows": rows, "notes": notes, "examples": examples,
                    "paired": _paired(_obj(task.get("paired"), f"{where}.paired"), models, [ACCURACY],
                                      f"{where}.paired")})
    return out


def _clip(value: Any, limit: int = 400) -> str:
    text = "—" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " …"


def _calibration(raw: dict[str, Any], models: list[Model], where: str) -> list[figures.Calibration]:
    out = []
    for m in [m for m in models if m.name in raw]:
        bins = []
        found = _dig(raw, where, m.name, "bins") or []
        if not isinstance(found, list):
            raise _Malformed(f"{where}.{m.name}.bins", "a list of bins")
        for i, b in enumerate(found):
            b = _obj(b, f"{where}.{m.name}.bins[{i}]")
            lo, hi, count, conf, acc = (_num(b.get(k)) for k in ("lo", "hi", "count", "confidence", "accuracy"))
            if lo is None or hi is None:
                raise _Malformed(f"{where}.{m.name}.bins[{i}]", "a bin with numbers lo and hi")
            used = count is not None and conf is not None and acc is not None  # an empty bin has no accuracy
            bins.append((lo, hi, int(count) if used else 0, conf or 0.0, acc or 0.0))
        if bins and (ece := _num(_dig(raw, where, m.name, "ece"))) is not None:
            out.append(figures.Calibration(m.label, m.color, ece, bins))
    return out


def build_view(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Everything both templates show, from a loaded summary (see `load_summary`)."""
    for key in ("reference", "baseline", "primary"):
        if not isinstance(summary.get(key), str | None):
            raise _Malformed(key, "a model or set name, or null")
    models = _models(summary)
    by_name = {m.name: m for m in models}

    def first(role: str) -> Model | None:
        return next((m for m in models if m.role == role), None)

    roles = {"reference": by_name.get(summary.get("reference")), "student": first("student"),
             "baseline": by_name.get(summary.get("baseline")) or first("baseline")}
    roles["teacher"] = roles["reference"] or first("teacher")
    for m in models:
        i = m.info
        m.info = {"params": human_count(_num(i.get("params"))), "disk": human_bytes(_num(i.get("disk_bytes"))),
                  "score": _rate(_num(i.get("score_tokens_per_s"))), "path": i.get("path"),
                  "generate": _rate(_num(i.get("generate_tokens_per_s"))), "raw": i}
    primary = summary.get("primary")
    sets = [_eval_set(n, s, models, roles, n == primary) for n, s in _obj(summary.get("sets"), "sets").items()]
    sets.sort(key=lambda s: not s["primary"])
    main = sets[0] if sets else None
    figs: dict[str, Any] = {"quality": None, "reliability": None, "reliability_set": None, "left_out": []}
    if main:
        cost = [m for m in models if main["nll"].get(m.name)]
        points = [figures.Point(m.label, m.color, main["nll"][m.name], _num(m.info["raw"].get("params")),
                                _num(m.info["raw"].get("score_tokens_per_s"))) for m in cost if m.role != "init"]
        if any(p.params or p.tokens_per_s for p in points):
            figs["quality"] = figures.embed(figures.quality_vs_cost(points, main["name"]))
            figs["left_out"] = [f"{m.label} (NLL {ci_cell(main['nll'][m.name], NLL).mean})" for m in cost
                                if m.role == "init"]
        calibrated = next((s for s in sets if s["calibration"]), None)
        cal = _calibration(calibrated["calibration"], models, f"sets.{calibrated['name']}.calibration") \
            if calibrated else []
        if cal:
            figs["reliability"] = figures.embed(figures.reliability(cal))
            figs["reliability_set"] = calibrated["name"]
    prov = _obj(summary.get("provenance"), "provenance")
    return {
        "kind": summary.get("kind") or "distill", "run_dir": str(run_dir), "run_name": run_dir.resolve().name,
        "models": models, "roles": roles, "sets": sets, "main": main, "figures": figs,
        "headline": _headline(main, roles, _obj(summary.get("paired"), "paired")),
        "training": _training(_obj(summary.get("training"), "training"), models, run_dir),
        "tasks": _tasks(_obj(summary.get("tasks"), "tasks"), models),
        "provenance": [(k, "—" if v is None else str(v)) for k, v in prov.items()], "created": prov.get("created"),
        "stages": [(k, human_seconds(_num(v))) for k, v in _obj(summary.get("wall_s"), "wall_s").items()],
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                             autoescape=lambda name: bool(name and name.endswith(".html.j2")),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    env.filters["human"] = human_count
    return env


def write_report(run_dir: Path, *, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md for the summary.json or eval.json in `run_dir` (or for `run_dir` itself, a
    result file) into `out_dir`, default the result file's folder; return their paths. Raises DataError when there
    is no result file or it does not match schema version 1."""
    path = result_file(Path(run_dir))
    run_dir = path.parent
    summary = load_summary(path)
    try:
        view = build_view(summary, run_dir)
    except _Malformed as exc:
        raise DataError(f"{path}: {exc}; regenerate it with `distill eval`") from exc
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    html, md = out_dir / "report.html", out_dir / "report.md"
    html.write_text(env.get_template("report.html.j2").render(**view), encoding="utf-8")
    md.write_text(env.get_template("report.md.j2").render(**view), encoding="utf-8")
    return html, md
