"""Output fingerprint: is the suspect closer to the teacher than models it was not distilled from?

On the same documents, each model's per-document top-1 agreement with the teacher and forward KL(teacher ‖ model)
(eval/doc_stats.py, the numbers `distill eval` reports), then, per reference model, a paired sign-flip permutation
test over documents of d_i = (reference's distance − suspect's distance): under H0 (the suspect is no closer to the
teacher than the reference) each d_i is symmetric about 0, so flipping signs leaves the mean's distribution
unchanged. Exact over all 2^n sign vectors when that is at most `n_permutations`, else a seeded Monte Carlo sample
with the (1 + hits) / (1 + P) p-value, which stays valid.

This is evidence of similarity, not proof of distillation: models trained on overlapping data, or from the same
base, converge on the same predictions without any distillation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

CAVEAT = ("Evidence of similarity, not proof of distillation: models trained on overlapping data (or from a common "
          "base) converge on similar predictions without any distillation, and a reference model that is weaker "
          "overall makes any suspect look close to the teacher.")
TEST = "paired sign-flip permutation test over documents of mean(reference distance − suspect distance), one-sided"


@dataclass
class SignFlip:
    statistic: float  # the observed mean difference
    p_value: float
    method: str  # "exact" or "monte_carlo"
    n_permutations: int  # sign vectors evaluated (2^n when exact)
    hits: int  # sign vectors with a mean ≥ the observed one


def sign_flip_test(differences: Sequence[float], *, n_permutations: int = 10_000, seed: int = 0) -> SignFlip:
    """One-sided test of mean(differences) > 0 by flipping the sign of each difference independently."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n == 0:
        raise ValueError("no documents to test over")
    observed = float(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))  # a tie counts as a hit (conservative)
    if 2 ** n <= n_permutations:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = signs @ d / n
        hits = int((means >= observed - tolerance).sum())
        return SignFlip(observed, hits / len(signs), "exact", len(signs), hits)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 2048):
        rows = min(2048, n_permutations - start)
        signs = rng.choice((1.0, -1.0), size=(rows, n))
        hits += int((signs @ d / n >= observed - tolerance).sum())
    return SignFlip(observed, (1 + hits) / (1 + n_permutations), "monte_carlo", n_permutations, hits)


@dataclass
class DocDistances:
    """Per document, one model's mean agreement with the teacher and mean forward KL from it."""

    agreement: np.ndarray
    kl_forward: np.ndarray
    tokens: np.ndarray


def doc_distances(models: dict[str, torch.nn.Module], teacher: str, documents: Sequence[Sequence[int]], *,
                  n_tokens: int, pad_id: int, batch_size: int = 4) -> dict[str, DocDistances]:
    """Every model but the teacher, scored against the teacher on the same batches (eval/doc_stats.py)."""
    from distill.eval.doc_stats import score_documents

    scored = score_documents(models, documents, reference=teacher, batch_size=batch_size, pad_token_id=pad_id,
                             vocab_size=n_tokens, progress=False, label="fingerprint")
    out = {}
    for name, stats in scored.stats.items():
        if name == teacher:
            continue
        tokens = stats.values[:, stats.index("tokens")]
        out[name] = DocDistances(stats.values[:, stats.index("agree")] / tokens,
                                 stats.values[:, stats.index("kl_forward")] / tokens, tokens)
    return out


def distance(doc: DocDistances, metric: str) -> np.ndarray:
    """Per-document distance to the teacher: 1 − agreement, or forward KL."""
    return 1.0 - doc.agreement if metric == "agreement" else doc.kl_forward
