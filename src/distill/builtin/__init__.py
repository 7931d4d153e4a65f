"""Things distill can build or find without the internet: tiny models for tests and the tiny recipe, and aliases
(`builtin:NAME`) for models and data that materialise once into the user's cache directory."""

BUILTIN_PREFIX = "builtin:"  # `builtin:NAME` in a recipe, a task or the CLI names one of these
