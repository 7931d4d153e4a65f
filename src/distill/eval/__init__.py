"""Evaluation: metrics with bootstrap confidence intervals over documents, tasks, contamination checks."""
