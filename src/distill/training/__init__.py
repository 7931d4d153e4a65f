"""The training loop (accelerate), its checkpoints, and its metrics."""
