"""User verifiers for tests/test_verifiers.py, imported by dotted path (`verifier_fixtures:NAME`) the way a recipe
names one; pytest puts tests/ on sys.path."""

from __future__ import annotations

from distill.generation.verifiers import Verdict


def says_the_answer(record, completion):
    """A bool: the reference appears in the completion."""
    return str(record["answer"]) in completion


def half_credit(record, completion):
    """A float score: 0.5 for any completion, 1.0 for the reference itself."""
    return 1.0 if completion.strip() == str(record["answer"]) else 0.5


def own_verdict(record, completion):
    """A full Verdict, kept as it is."""
    return Verdict(accepted=completion.isupper(), score=0.25, extracted=completion.lower(), reason="shouting")


def too_generous(record, completion):
    return 1.5


def chatty(record, completion):
    return "yes"


NOT_A_FUNCTION = 3
