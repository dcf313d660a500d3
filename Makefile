# Everything a fresh machine needs is installed here: `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Core install (scoring only needs numpy, OpenCV, pycocotools): enough for the demo.
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# Everything: the model, serving, hub and LLM extras plus the test tools.
$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[all]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/reasonseg demo --out demo-output

test: $(VENV)/.all
	$(BIN)/python -m pytest -q

bench: $(VENV)/.all
	$(BIN)/python benchmarks/bench_score.py

lint: $(VENV)/.all
	$(BIN)/ruff check reasonseg tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis
