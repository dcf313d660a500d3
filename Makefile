# Everything a fresh machine needs is installed here: `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test bench lint clean system-deps .venv-cv48

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

# OpenCV 4.8, the version LISA's environment pins (it needs numpy < 2), in a scratch environment of its own: the
# tests draw polygons with it to pin reasonseg's ground truth to LISA's (tests/opencv48.py).
CV48 := .venv-cv48
$(CV48)/.ok:
	$(PYTHON) -m venv $(CV48)
	$(CV48)/bin/python -m pip --disable-pip-version-check -q install 'numpy<2' 'opencv-python-headless==4.8.0.74'
	touch $@

.venv-cv48: $(CV48)/.ok

test: $(VENV)/.all system-deps $(CV48)/.ok
	$(BIN)/python -m pytest -q

bench: $(VENV)/.all
	$(BIN)/python benchmarks/bench_score.py

lint: $(VENV)/.all
	$(BIN)/ruff check reasonseg tests benchmarks

clean:
	rm -rf $(VENV) $(CV48) demo-output .pytest_cache .hypothesis
