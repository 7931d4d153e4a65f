"""Text-level distillation's data side (`distill generate`, docs/generate.md): a teacher writes completions, a
verifier judges them, the accepted, distinct ones become training data.

`run.py` is the command, top to bottom; `engine.py` and `sampling.py` the batched, batch-invariant local sampler
(also what `distill serve` runs); `backends.py` the local model or an OpenAI-compatible endpoint; `prompts.py`,
`journal.py` (resume), `selection.py` (rejection sampling, duplicates, pass@k), `verifiers.py` and `dedup.py`.
"""
