"""Turn each test's numbers into the audit.json blocks (`distill.results.audit`), with every p-value's test name,
assumptions, units and raw counts written next to it — the file must be judgeable without this code."""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

from distill.defenses.keys import key_id
from distill.forensics import canaries as canary_math
from distill.forensics.detector import BINOMIAL_TEST, Score, assumptions
from distill.forensics.fingerprint import TEST as SIGN_FLIP_TEST
from distill.forensics.fingerprint import SignFlip

NO_DEDUP_REASON = ("negative control: repeated (window, token) pairs are counted again, so the pairs are not "
                   "independent under H0 and this p-value is not valid (it shows why de-duplication is needed)")


def _log10(p: float) -> float | None:
    return math.log10(p) if p > 0 else None


def watermark_block(mode: str, result: Score, *, dedup: bool, key: Any, source: str | None, n_texts: int,
                    filter_top: int | None, filter_windows: int | None, settings: dict[str, Any]) -> dict[str, Any]:
    pvalue = {"test": BINOMIAL_TEST, "assumptions": assumptions(mode, dedup, filter_top is not None),
              "p_value": result.p_value, "log10_p_value": result.log10_p_value, "n": result.scored,
              "unit": "distinct (window, token) pairs" if dedup else "(window, token) pairs, repeats included",
              "counts": {"green": result.green, "scored": result.scored, "gamma": result.gamma,
                         "tokens_seen": result.tokens_seen, **{f"skipped_{k}": v for k, v in result.skipped.items()}},
              "valid": dedup, "invalid_reason": None if dedup else NO_DEDUP_REASON}
    return {"mode": mode, "dedup": dedup, "key_id": key_id(key.secret), "context_width": key.context_width,
            "gamma": key.gamma, "source": source, "n_texts": n_texts, "tokens_seen": result.tokens_seen,
            "skipped": result.skipped, "pairs_scored": result.scored, "green": result.green,
            "green_share": result.green / result.scored if result.scored else None, "filter_top": filter_top,
            "filter_windows": filter_windows, "settings": settings, "pvalue": pvalue}


CANARY_ASSUMPTIONS = [
    "H0: the suspect never trained on the canary's planted response",
    "the secret was drawn uniformly from the candidate space, independently of the suspect, so under H0 its rank "
    "among the candidates is uniform",
    "ties in log-likelihood count against the secret (conservative)",
]


def canary_item(index: int, trigger: str, found: canary_math.Exposure, extracted: bool, size: int
                ) -> dict[str, Any]:
    exact = found.method == "exact"
    test = ("exact rank test: P(rank ≤ r) = r / |R|" if exact else
            "Monte Carlo rank test: (1 + #sampled candidates scoring ≥ the secret) / (m + 1)")
    extra = [] if exact else ["the m sampled candidates are uniform draws from R (seeded), exchangeable with the "
                              "secret under H0"]
    pvalue = {"test": test, "assumptions": CANARY_ASSUMPTIONS + extra, "p_value": found.p_value,
              "log10_p_value": _log10(found.p_value), "n": found.candidates_scored, "unit": "candidates scored",
              "counts": {"candidates_at_or_above": found.above, "space_size": size,
                         "candidates_scored": found.candidates_scored}}
    # no hash of the trigger: an unkeyed hash of ~48 random bits (or of a chosen phrase) can be searched
    return {"index": index, "loglik": found.loglik, "rank": found.rank,
            "rank_method": found.method, "candidates_scored": found.candidates_scored, "exposure": found.exposure,
            "extracted": extracted, "pvalue": pvalue}


def canary_combined(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Fisher's combination of the per-canary p-values (independent under H0: the secrets were drawn apart)."""
    ps = [i["pvalue"]["p_value"] for i in items]
    statistic, p = stats.combine_pvalues(ps, method="fisher")
    return {"test": "Fisher's method: −2 Σ ln p_i against χ² with 2n degrees of freedom",
            "assumptions": [*CANARY_ASSUMPTIONS, "the canaries' secrets were drawn independently, so their p-values "
                            "are independent under H0; discrete p-values make the combination conservative"],
            "p_value": float(p), "log10_p_value": _log10(float(p)), "n": len(ps), "unit": "canaries",
            "counts": {"fisher_statistic": float(statistic), "extracted": sum(i["extracted"] for i in items)}}


def fingerprint_comparison(reference: str, metric: str, suspect_mean: float, reference_mean: float, test: SignFlip,
                           n_docs: int, n_tokens: int) -> dict[str, Any]:
    what = "1 − top-1 agreement with the teacher" if metric == "agreement" else "forward KL(teacher ‖ model)"
    pvalue = {"test": f"{SIGN_FLIP_TEST}; distance = {what}",
              "assumptions": ["H0: the suspect is no closer to the teacher than the reference: each document's "
                              "difference is symmetric about 0 (exchangeable signs)",
                              "documents are independent of each other",
                              "a small p-value is evidence of similarity, not proof of distillation"],
              "p_value": test.p_value, "log10_p_value": _log10(test.p_value), "n": n_docs, "unit": "documents",
              "counts": {"hits": test.hits, "permutations": test.n_permutations, "tokens": n_tokens,
                         "mean_difference": test.statistic}}
    return {"reference": reference, "metric": metric, "suspect_mean": suspect_mean, "reference_mean": reference_mean,
            "mean_difference": test.statistic, "pvalue": pvalue}
