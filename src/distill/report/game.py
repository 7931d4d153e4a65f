"""The report's section for the distillation game (game.json, `distill.results.game`): the table of each defense's
cost to the teacher's users against each thief's gain, the watermark audit's p-values, and the utility-vs-gain
plot (one curve per defense and thief, each starting from the undefended teacher)."""

from __future__ import annotations

from typing import Any

from distill.report import figures
from distill.results.game import GameResult, GameRow
from distill.results.schema import Interval

THIEF_ORDER = ("passive", "adaptive", "adaptive_literal", "verifier", "logprob")
PLOTTED = {"passive": "-o", "adaptive": "--s"}


def _pct(v: Interval, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if v.ci_low is None or v.ci_high is None:
        return f"{100 * v.mean:{sign}.1f}"
    return f"{100 * v.mean:{sign}.1f} [{100 * v.ci_low:{sign}.1f}, {100 * v.ci_high:{sign}.1f}]"


def _curves(result: GameResult) -> list[tuple[str, str, str, list[tuple[float, float, float, float]]]]:
    base = next((r for r in result.table if r.config == "base"), None)
    families: dict[str, list[GameRow]] = {}
    for row in result.table:
        if row.same_samples_as is None:  # a row re-using another's samples would repeat its point
            families.setdefault(row.defense, []).append(row)
    curves = []
    for i, (family, rows) in enumerate(families.items()):
        if family != "temperature" and base is not None:
            rows = [base, *rows]
        for thief, style in PLOTTED.items():
            points = [(100 * r.teacher_utility.mean, 100 * t.gain.mean,
                       100 * (t.gain.mean if t.gain.ci_low is None else t.gain.ci_low),
                       100 * (t.gain.mean if t.gain.ci_high is None else t.gain.ci_high))
                      for r in rows if (t := r.thieves.get(thief))]
            color = figures.OTHER_COLORS[i % len(figures.OTHER_COLORS)]
            curves.append((f"{family} ({thief})", color, style, points))
    return curves


def build_game_view(result: GameResult) -> dict[str, Any]:
    thieves = [t for t in THIEF_ORDER if any(t in r.thieves for r in result.table)]
    rows = []
    for r in result.table:
        audit = r.thieves.get("passive")
        strength = "—" if r.strength is None else f"{r.strength:g}"
        rows.append({"config": r.config, "defense": r.defense, "strength": strength,
                     "utility": _pct(r.teacher_utility) + (" (same samples)" if r.same_samples_as else ""),
                     "gains": [_pct(r.thieves[t].gain, signed=True) if t in r.thieves else "—" for t in thieves],
                     "audit": ", ".join(f"{p:.2g}" for p in audit.audit_p) if audit and audit.audit_p else "—"})
    seeds = max((t.seeds for r in result.table for t in r.thieves.values()), default=0)
    return {"thieves": thieves, "rows": rows, "init": f"{100 * result.init_accuracy:.1f}%",
            "eval_problems": result.eval_problems, "seeds": seeds,
            "figure": figures.embed(figures.utility_vs_gain(_curves(result)))}
