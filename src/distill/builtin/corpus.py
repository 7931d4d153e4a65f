"""A procedural English-like corpus: small, deterministic and learnable.

It exists so that the tiny recipe and the tests have text with real structure (agreement, arithmetic, repeated
entities) that a 2-layer model can learn in seconds, without shipping or downloading a data set.
"""

from __future__ import annotations

import random

_NAMES = ["anna", "ben", "cleo", "dev", "emma", "finn", "gus", "hana", "ivo", "jade"]
_ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "hen", "eel"]
_COLORS = ["red", "blue", "green", "small", "big", "old", "quiet", "happy"]
_PLACES = ["the garden", "the river", "the market", "the school", "the hill", "the forest"]
_VERBS = [("sees", "saw"), ("finds", "found"), ("feeds", "fed"), ("follows", "followed"), ("draws", "drew")]
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _sentence(rng: random.Random, hero: str, pet: str) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        present, _ = rng.choice(_VERBS)
        return f"{hero} {present} the {rng.choice(_COLORS)} {rng.choice(_ANIMALS)} near {rng.choice(_PLACES)}."
    if kind == 1:
        _, past = rng.choice(_VERBS)
        return f"yesterday {hero} {past} a {pet} in {rng.choice(_PLACES)}."
    if kind == 2:
        a, b = rng.randrange(6), rng.randrange(5)
        return f"{hero} had {_NUMBERS[a]} apples and got {_NUMBERS[b]} more, so {hero} has {_NUMBERS[a + b]} apples."
    if kind == 3:
        return f"the {pet} likes {hero} because {hero} is kind to the {pet}."
    return f"{hero} and the {rng.choice(_COLORS)} {pet} walk to {rng.choice(_PLACES)} together."


def tiny_stories(n: int, seed: int = 0) -> list[str]:
    """`n` short stories of 3-6 sentences, each about one person and one animal."""
    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        hero, pet = rng.choice(_NAMES), rng.choice(_ANIMALS)
        stories.append(" ".join(_sentence(rng, hero, pet) for _ in range(rng.randint(3, 6))))
    return stories
