"""What a teacher gives the loss for each token: dense logits, or a top-k signal (ids, log-probs, tail mass)."""

from distill.teachers.signal import TopKSignal

__all__ = ["TopKSignal"]
