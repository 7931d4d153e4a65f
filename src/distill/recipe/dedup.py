"""`generate.dedup`: what a recipe says about removing duplicate completions (docs/generate.md, "Duplicates").
Recipe data, kept apart from `generation/dedup.py` with no heavy import, like `recipe/verifier.py`: every bound is
checked here, once, and `generation/dedup.py` takes the spec as it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DedupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exact: bool = Field(default=True, description="Remove a completion whose normalised text (NFKC, case folded, "
                        "whitespace collapsed) equals that of one already kept.")
    near: bool = Field(default=True, description="Remove a completion whose estimated Jaccard similarity (MinHash "
                       "over word n-grams) with one already kept is at least `threshold`.")
    threshold: float = Field(default=0.85, gt=0.0, le=1.0, description="Jaccard similarity of the n-gram sets at "
                             "which two completions are near duplicates. One word changed in the middle of an "
                             "N-word text gives (N-5)/(N+1) with n = 3: 0.85 is reached from about 40 words.")
    ngram: int = Field(default=3, ge=1, le=16, description="Words per shingle; a text of fewer words is shingled into "
                       "runs of `ngram` characters instead.")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations: the similarity estimate's "
                          "standard error is sqrt(J(1-J)/num_perm), at most 1/(2 sqrt(num_perm)) (0.044 at 128).")
    scope: Literal["per_prompt", "global"] = Field(default="per_prompt", description="`per_prompt`: a duplicate is "
                                                   "one of an earlier kept completion of the same prompt; `global`: "
                                                   "of any prompt.")
