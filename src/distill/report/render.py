"""Render a result into `report.html` (one self-contained file) and `report.md`.

Everything shown comes from result files, read through `distill.results`: the summary.json of a demo — or, for a
plain `distill eval`, its eval.json, the same format without the training facts — and the metrics.jsonl of each
training run it names. `view.build_view` turns them into one view that both templates (`report.html.j2`,
`report.md.j2`, next to this file) render, so the two reports cannot disagree. A malformed result file is a
DataError naming the file and the field, raised while it is loaded.

An `audit.json` (`distill audit`) next to the result file adds the audit section (report/audit.py); a folder holding
only an audit.json, or the audit.json itself, gives a report of the audit alone.

A training run folder (`distill report RUN`) gives the report of that run: its curves, validation metrics, best
checkpoint and recipe (report/training_runs.py); once a result file has been written into it (`distill eval ... --out
RUN/eval.json`, `distill audit ... --out RUN/audit.json`), that result and the run's training section together. A run
that has logged no step yet has no training section, and the report says so in its headline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from distill.report import figures
from distill.report.audit import build_audit_view
from distill.report.cells import Model, human_count
from distill.report.game import build_game_view
from distill.report.training_runs import is_training_run, no_steps, run_facts, run_view, training
from distill.report.view import build_view
from distill.results.audit import AUDIT, AuditResult, is_audit_file, load_audit
from distill.results.game import GAME, GameResult, is_game_file, load_game
from distill.results.io import load_result, result_file
from distill.results.layout import REPORT_HTML, REPORT_MD, RESULT_FILES

__all__ = ["build_view", "result_file", "write_report"]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                             autoescape=lambda name: bool(name and name.endswith(".html.j2")),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    env.filters["human"] = human_count
    return env


def write_report(run_dir: Path, *, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md for the summary.json or eval.json in `run_dir` (or for `run_dir` itself, a
    result file, or a training run folder) into `out_dir`, default the result file's folder; return their paths.
    Raises DataError when there is no result file, it is of another schema version, or a field has the wrong
    shape."""
    run_dir = Path(run_dir)
    path = _source(run_dir)
    if path is None:
        view, folder = run_view(run_dir), run_dir
    else:
        view, folder = _result_view(path), path.parent
    out_dir = Path(out_dir) if out_dir is not None else folder
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    html, md = out_dir / REPORT_HTML, out_dir / REPORT_MD
    html.write_text(env.get_template("report.html.j2").render(**view), encoding="utf-8")
    md.write_text(env.get_template("report.md.j2").render(**view), encoding="utf-8")
    return html, md


def _result_view(path: Path) -> dict[str, Any]:
    """The view of a result file: a game's, an audit's, or an evaluation's (with the audit beside it); each with the
    training section of the run it was written into."""
    if is_game_file(path):
        view = game_only_view(load_game(path), path.parent)
    elif is_audit_file(path):
        view = audit_only_view(load_audit(path), path.parent)
    else:
        view = build_view(load_result(path), path.parent)
        audit = path.parent / AUDIT
        view["audit"] = build_audit_view(load_audit(audit)) if audit.is_file() else None
        view["game"] = None
    if not view["training"] and is_training_run(path.parent):  # `distill eval RUN --out RUN/eval.json`, or audit
        _add_run(view, path.parent)
    return view


def _add_run(view: dict[str, Any], folder: Path) -> None:
    """Put the training section of the run a result file was written into in its view, or, before the run has
    logged a step, a note in its headline. The run's student is the model named after the run folder (`distill eval
    RUN` names it so), else the first student, else the run itself (an audit names no models)."""
    facts = run_facts(folder)
    if facts is None:
        view["headline"] = f"{view['headline']} {no_steps(folder)}"
        return
    name, models = folder.resolve().name, list(view["models"])
    named = next((m.name for m in models if m.name == name), None) or next(
        (m.name for m in models if m.role == "student"), None)
    if named is None:
        named = name
        models.append(Model(name, name, "student", figures.ROLE_COLORS["student"]))
    view["training"] = training({named: facts}, models, folder)


def _source(run_dir: Path) -> Path | None:
    """The file to render: `run_dir` itself when it is a file; else its summary.json or eval.json; else its
    audit.json or game file; else None for a training run folder (its own report); else `result_file`'s one-line
    error."""
    if run_dir.is_dir() and not any((run_dir / name).is_file() for name in RESULT_FILES):
        for name in (AUDIT, GAME):
            if (run_dir / name).is_file():
                return run_dir / name
        if is_training_run(run_dir):
            return None
    return result_file(run_dir)


def audit_only_view(result: AuditResult, folder: Path) -> dict[str, Any]:
    """The report's view with no evaluation: every evaluation section empty, the audit section filled."""
    audit = build_audit_view(result)
    verdicts = [block["verdict"] for key in ("watermark", "canaries") if (block := audit[key])]
    return {"kind": result.kind, "run_dir": str(folder), "run_name": folder.resolve().name, "models": [], "sets": [],
            "main": None, "roles": {}, "training": {}, "tasks": [], "stages": [],
            "figures": {"quality": None, "reliability": None, "reliability_set": None, "left_out": []},
            "headline": " ".join(verdicts) or f"Audit of {result.suspect}.", "provenance": audit["provenance"],
            "created": audit["created"], "audit": audit, "game": None}


def game_only_view(result: GameResult, folder: Path) -> dict[str, Any]:
    """The report's view of the distillation game alone: every evaluation section empty, the game section filled."""
    game = build_game_view(result)
    return {"kind": result.kind, "run_dir": str(folder), "run_name": folder.resolve().name, "models": [], "sets": [],
            "main": None, "roles": {}, "training": {}, "tasks": [], "stages": [],
            "figures": {"quality": None, "reliability": None, "reliability_set": None, "left_out": []},
            "headline": f"Each defense's cost to its users against the thieves' gain ({game['seeds']} seeds).",
            "provenance": [(k, "—" if v is None else str(v)) for k, v in result.provenance.items()],
            "created": None, "audit": None, "game": game}
