# Entry points: `make demo` and `make test` (see README.md). Everything else is a step of those.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEVCLUSTER := PYTHONPATH=tools $(PY) -m devcluster
STAMP := $(VENV)/.installed

.PHONY: help
help:
	@echo "make demo          start a local control plane and the ATC, and show it at work"
	@echo "make test          lint, type-check and run the whole test suite (what CI runs)"
	@echo "make cluster-up    start the local control plane (.local/kubeconfig)"
	@echo "make cluster-down  stop it"
	@echo "make lint          ruff, mypy --strict, import-linter"

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON_BOOTSTRAP) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

.PHONY: venv
venv: $(STAMP)

.PHONY: binaries
binaries: $(STAMP)
	$(DEVCLUSTER) build
	@PYTHONPATH=tools $(PY) tools/helmcli.py >/dev/null

.PHONY: cluster-up
cluster-up: $(STAMP)
	$(DEVCLUSTER) up

.PHONY: cluster-down
cluster-down:
	@if [ -x $(PY) ]; then $(DEVCLUSTER) down; else echo "no virtualenv, nothing to stop"; fi

.PHONY: cluster-status
cluster-status: $(STAMP)
	$(DEVCLUSTER) status

.PHONY: lint
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: test
test: $(STAMP) binaries lint
	$(VENV)/bin/pytest

.PHONY: conformance
conformance: $(STAMP) binaries
	$(VENV)/bin/pytest tests/conformance -p no:cacheprovider

.PHONY: demo
demo: cluster-up
	$(DEVCLUSTER) demo

.PHONY: demo-down
demo-down:
	@if [ -x $(PY) ]; then $(DEVCLUSTER) demo-down; fi

.PHONY: lock
lock: $(STAMP)
	{ echo "# Exact versions of every runtime and development dependency (transitive too)."; \
	  echo "# Regenerate with \`make lock\` after changing pyproject.toml."; \
	  $(PY) -m pip freeze --exclude-editable; } > requirements.lock

.PHONY: clean
clean: cluster-down
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
