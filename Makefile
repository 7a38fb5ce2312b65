# Fresh machine: `make up` runs the whole pipeline, `make test` passes every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install up test test-fast lint typecheck bench clean

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

test: lint typecheck
	$(BIN)/pytest -q -ra

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	test -x .bench/litellm/bin/litellm || ($(PYTHON) -m venv .bench/litellm \
	  && .bench/litellm/bin/pip install -q 'litellm[proxy]') || echo "LiteLLM did not install"
	$(BIN)/python bench/pricing.py
	$(BIN)/python bench/relay_overhead.py

clean:
	rm -rf $(VENV) .tokenops .pytest_cache .mypy_cache .ruff_cache
