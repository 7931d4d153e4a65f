"""distill: turn a large teacher model into a small, fast student, and tell the truth about what was transferred."""

from distill.errors import DistillError

__version__ = "0.1.0"

__all__ = ["DistillError", "__version__"]
