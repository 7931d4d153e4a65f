# `make demo` and `make test` each create or refresh .venv and install everything they need, then run.
# torch is installed first (the CPU wheel, pinned), everything else under a constraint on it, so pip never swaps in
# a CUDA build of several GB.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install demo test test-slow lint clean

help:
	@echo "make demo       install into .venv and run the main job (examples/recipes/tiny.yaml for now)"
	@echo "make test       install into .venv and run the test suite (slow tests excluded)"
	@echo "make test-slow  run the slow tests too"
	@echo "make lint       ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distill train examples/recipes/tiny.yaml --overwrite

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
