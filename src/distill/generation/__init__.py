"""Text-level distillation's data side: a teacher writes completions, a verifier judges them, the accepted ones
become training data (`distill generate`, issue 12).

The package will hold teacher generation (a local model or an OpenAI-compatible endpoint), rejection sampling
(keep up to m accepted completions of n per prompt, without duplicates, resumably) and the verifiers that judge a
completion. So far: the verifiers (`verifiers.py`) and the duplicate filter (`dedup.py`); docs/generate.md
describes both.
"""
