# Everything a fresh machine needs is installed here: `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test bench lint clean system-deps

# Debian packages the tests drive for real: headless Chromium (leaderboard page) and PostgreSQL (multi-host DB).
SYSTEM_PACKAGES := chromium postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Everything: the model, serving, hub and LLM extras plus the test tools.
# DeepSpeed builds against the installed torch, so it comes after it, without build isolation (runs on CPU with gloo).
$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[all]'
	$(PIP) install --no-build-isolation 'deepspeed==0.19.8'
	touch $@

# The demo shows every stage, so it installs every extra (the same environment as the tests).
demo: $(VENV)/.all
	$(BIN)/reasonseg demo --out demo-output --overwrite

system-deps:
	@if ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

test: $(VENV)/.all system-deps
	$(BIN)/python -m pytest -q

bench: $(VENV)/.all
	$(BIN)/python benchmarks/bench_score.py

lint: $(VENV)/.all
	$(BIN)/ruff check reasonseg tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis
