# Fresh machine: `make up` runs the whole pipeline, `make test` passes every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install up test test-fast lint typecheck bench clean focus-validator browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/tokenops up --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck focus-validator browser
	$(BIN)/pytest -q -ra

test-fast: install
	$(BIN)/pytest -q -m "not slow"

# The FinOps Foundation's FOCUS validator (needs Python >= 3.12), used by the FOCUS export tests.
# The first candidate interpreter that runs and is new enough (a pyenv shim may exist but not run).
# focus-validator 2.2.1 pins numpy<2 but not pyarrow, whose 26.x needs NumPy 2.
FOCUS_VALIDATOR := .bench/focus-validator/.installed-2.2.1-pyarrow-lt26
PY312_CANDIDATES := python3.12 python3.13 python3 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3)

$(FOCUS_VALIDATOR):
	rm -rf .bench/focus-validator
	for py in $(PY312_CANDIDATES); do \
	  if $$py -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    $$py -m venv .bench/focus-validator \
	    && .bench/focus-validator/bin/python -m pip install --quiet 'focus-validator==2.2.1' \
	         'pyarrow<26' \
	    && .bench/focus-validator/bin/python -c 'import focus_validator.main, pyarrow.lib' \
	    && touch $@ && exit 0; \
	    rm -rf .bench/focus-validator; echo "focus-validator did not install" >&2; exit 1; \
	  fi; \
	done; echo "focus-validator needs Python >= 3.12: none found ($(PY312_CANDIDATES))" >&2; exit 1

focus-validator: $(FOCUS_VALIDATOR)

# Headless Chromium from Debian for the dashboard's browser tests (driven by Playwright, which
# uses this browser rather than downloading its own).
browser:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

bench: install
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	test -x .bench/litellm/bin/litellm || ($(PYTHON) -m venv .bench/litellm \
	  && .bench/litellm/bin/pip install -q 'litellm[proxy]') || echo "LiteLLM did not install"
	$(BIN)/python bench/pricing.py
	$(BIN)/python bench/relay_overhead.py

clean:
	rm -rf $(VENV) .tokenops .pytest_cache .mypy_cache .ruff_cache
