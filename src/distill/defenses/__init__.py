"""Serve-time defenses against distillation (docs/defenses.md): logits processors and exposure controls built from
a key file (`keys.py`), plugged into `distill serve` and `distill generate`."""
