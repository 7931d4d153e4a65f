"""The report's audit section, from an audit.json (`distill.results.audit`): each test's verdict in words, its
counts, and every p-value with the test it comes from and what it assumes — so the section cannot say more than
the file does. A negative control (no de-duplication) is shown struck through as invalid, never as evidence.
The null calibration, when the audit was given one, is shown with its QQ plot (figures.qq_uniform)."""

from __future__ import annotations

import math
from typing import Any

from distill.report import figures
from distill.results.audit import AuditResult, CanaryTest, FingerprintTest, NullCalibration, PValue, WatermarkTest

ALPHA = 0.01  # the level the verdict sentences use; every p-value is shown as it is
COLORS = ("#2a6fdb", "#c0392b")


def p_text(p: PValue) -> str:
    """A p-value readable at any size: 0.0312, 4.1e-07, or 10^-312.4 where the float underflowed."""
    if p.p_value == 0 or (p.p_value < 1e-300 and p.log10_p_value is not None):
        return f"10^{p.log10_p_value:.1f}" if p.log10_p_value is not None else "< 1e-300"
    return f"{p.p_value:.4f}" if p.p_value >= 1e-3 else f"{p.p_value:.2g}"


def _pvalue(p: PValue) -> dict[str, Any]:
    counts = ", ".join(f"{k} {_num(v)}" for k, v in p.counts.items())
    return {"text": p_text(p), "test": p.test, "assumptions": p.assumptions, "n": f"{p.n:,} {p.unit}",
            "counts": counts, "valid": p.valid, "invalid_reason": p.invalid_reason or "",
            "significant": p.valid and p.p_value <= ALPHA}


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:.4g}"


def _watermark(tests: list[WatermarkTest]) -> dict[str, Any] | None:
    if not tests:
        return None
    rows = []
    for t in tests:
        rows.append({"mode": t.mode, "dedup": "yes" if t.dedup else "no (control)", "seen": f"{t.tokens_seen:,}",
                     "scored": f"{t.pairs_scored:,}", "green": f"{t.green:,}",
                     "share": "—" if t.green_share is None else f"{100 * t.green_share:.1f}%",
                     "gamma": f"{100 * t.gamma:.0f}%", "filter": f"top {t.filter_top:,}" if t.filter_top else "—",
                     "p": _pvalue(t.pvalue), "source": t.source or "—"})
    valid = [t for t in tests if t.pvalue.valid]
    hits = [t for t in valid if t.pvalue.p_value <= ALPHA]
    if hits:
        modes = " and ".join(sorted({t.mode for t in hits}))
        verdict = (f"The suspect is radioactive for this watermark key ({modes} mode, p ≤ {ALPHA}): it shows the "
                   "key's green pairs more often than chance, so it very likely trained on text watermarked with it. "
                   "This says it saw watermarked text, not how much, nor what else it learned from.")
    else:
        verdict = (f"No radioactivity detected at p ≤ {ALPHA}. Absence of evidence is weak: little watermarked "
                   "training text, few scored pairs or a small δ all make a distilled suspect look clean.")
    return {"rows": rows, "verdict": verdict, "detected": bool(hits),
            "key": f"key {tests[0].key_id}, window {tests[0].context_width}, γ {tests[0].gamma:g}"}


def _canaries(c: CanaryTest | None) -> dict[str, Any] | None:
    if c is None:
        return None
    rows = [{"index": i.index, "rank": f"{i.rank:,.0f}" if i.rank_method == "exact"
             else f"≈{i.rank:,.1f}", "method": i.rank_method, "exposure": f"{i.exposure:.2f}",
             "extracted": "yes" if i.extracted else "no", "p": _pvalue(i.pvalue)} for i in c.items]
    combined = _pvalue(c.combined) if c.combined else None
    verdict = (f"{c.extracted} of {c.n} canaries extracted by greedy generation ({100 * c.extraction_rate:.0f}%); "
               f"mean exposure {c.mean_exposure:.2f} bits of a possible {math.log2(c.space_size):.1f}.")
    if combined:
        verdict += f" Combined p-value {combined['text']}."
    return {"rows": rows, "combined": combined, "verdict": verdict, "space": f"{c.space_size:,}",
            "formatting": c.formatting, "estimator": c.estimator or ""}


def _fingerprint(f: FingerprintTest | None) -> dict[str, Any] | None:
    if f is None:
        return None
    models = [{"name": n, "agreement": f"{100 * v.get('agreement', float('nan')):.1f}%",
               "kl": f"{v.get('kl_forward', float('nan')):.4f}"} for n, v in f.models.items()]
    rows = [{"reference": c.reference, "metric": "1 − agreement" if c.metric == "agreement" else "KL(teacher‖·)",
             "suspect": f"{c.suspect_mean:.4f}", "ref": f"{c.reference_mean:.4f}",
             "diff": f"{c.mean_difference:+.4f}", "p": _pvalue(c.pvalue)} for c in f.comparisons]
    return {"models": models, "rows": rows, "caveat": f.caveat, "n_docs": f"{f.n_docs:,}",
            "n_tokens": f"{f.n_tokens:,}", "permutations": f"{f.n_permutations:,}", "method": f.method}


def _calibration(c: NullCalibration | None) -> dict[str, Any] | None:
    if c is None:
        return None
    alphas = sorted(set(c.fpr) | set(c.fpr_no_dedup), key=float, reverse=True)
    rows = [{"alpha": a, "dedup": _share(c.fpr.get(a)), "no_dedup": _share(c.fpr_no_dedup.get(a))} for a in alphas]
    series = [(label, color, ps) for (label, ps), color in
              zip((("with de-duplication", c.p_values), ("without (control)", c.p_values_no_dedup)), COLORS,
                  strict=True) if ps]
    figure = figures.embed(figures.qq_uniform(series, [float(a) for a in alphas] or (0.01, 0.001))) if series \
        else None
    ks = f"KS vs uniform: D = {c.ks_statistic:.3f}, p = {c.ks_p_value:.3g}" if c.ks_statistic is not None else ""
    if c.ks_statistic_no_dedup is not None:
        ks += f"; without de-duplication D = {c.ks_statistic_no_dedup:.3f}, p = {c.ks_p_value_no_dedup:.3g}"
    return {"rows": rows, "figure": figure, "ks": ks, "n_keys": f"{c.n_keys:,}",
            "tokens": f"{c.tokens:,}" if c.tokens else "—", "source": c.source or "—", "command": c.command or ""}


def _share(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def build_audit_view(result: AuditResult) -> dict[str, Any]:
    """Everything both templates show of one audit.json."""
    prov = result.provenance.to_json()
    return {"suspect": result.suspect, "keyfile": result.keyfile or "—", "created": prov.get("created"),
            "watermark": _watermark(result.watermark), "canaries": _canaries(result.canaries),
            "fingerprint": _fingerprint(result.fingerprint), "calibration": _calibration(result.calibration),
            "notes": result.notes, "provenance": [(k, "—" if v is None else str(v)) for k, v in prov.items()]}
