"""Training data: read records from a source, render and tokenize them, pack text, and plan batches."""
