# llm-gateway developer and CI entry points. `make test` is exactly what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
TOOLS_VENV := .venv-tools
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
REGION ?= us-east-1
ROUTING ?=

# Same import roots as Lambda (layer python/ dir + function CodeUri) and as pytest's pythonpath;
# set only for the commands that run project code outside pytest (dev, bench), never for sam.
PYPATH := PYTHONPATH=layers/common:functions/api:functions/worker:.
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

# pip prints a harmless "WARNING: Location ... is ignored" per index on this machine: drop those
# lines, keep everything else, keep pip's exit status (pipefail).
PIP_FILTER := 2>&1 | { grep -v '^WARNING: Location' || true; }

# pytest exits 5 when it collects no tests (an empty tests/ folder) and 4 for a missing folder (git
# keeps no empty folders); neither is a failure.
define pytest
if [ ! -d $(1) ]; then echo "pytest: no $(1)/ folder, nothing to run"; exit 0; fi; \
rc=0; $(PY) -m pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
if [ $$rc -eq 5 ]; then echo "pytest: no tests collected in $(1)"; rc=0; fi; exit $$rc
endef

.PHONY: help venv lint typecheck import-lint fmt test test-unit test-integration test-e2e pytest sam-validate \
        cfn-lint-expanded checkov bedrock-arns sam-build dev dev-reset admin chat bench clean distclean lock lock-check audit

help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# ---- virtualenvs: rebuilt only when a lock is newer than the stamp -------------------------------
# Every venv installs from a hashed lock (tools/lock.py; `make lock` regenerates them from the
# human-edited inputs: requirements-*.txt, layers/common/requirements.in, tools/requirements-*.txt).
# --no-deps: a lock lists every package already (pip cannot hash-check a dependency named with
# extras, e.g. aws-sam-cli -> boto3-stubs[...], against a pin without them).
PIP_LOCKED := -m pip install -q --require-hashes --no-deps -r
# Then the developer commands (pyproject.toml [project.scripts]: .venv/bin/llm-gateway and
# .venv/bin/llm-gateway-admin), an editable install of this checkout built by the locked setuptools:
# nothing is fetched, nothing copied (edits to local/ and the package take effect at once).
PIP_COMMANDS := -m pip install -q --no-deps --no-build-isolation --no-index -e .

venv: $(VENV)/.stamp $(SAM_VENV)/.stamp $(TOOLS_VENV)/.stamp ## create/update .venv, .venv-sam, .venv-tools (no-op when up to date)

$(VENV)/.stamp: requirements-dev.lock
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing requirements-dev.lock into $(VENV)"
	@$(PY) $(PIP_LOCKED) requirements-dev.lock $(PIP_FILTER)
	@$(PY) $(PIP_COMMANDS) $(PIP_FILTER)
	@touch $@ $(VENV)/.stamp-local

# `make dev` needs only the runtime and the local stack: a lean install, so a fresh clone is up fast.
$(VENV)/.stamp-local: requirements-local.lock
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing requirements-local.lock into $(VENV)"
	@$(PY) $(PIP_LOCKED) requirements-local.lock $(PIP_FILTER)
	@$(PY) $(PIP_COMMANDS) $(PIP_FILTER)
	@touch $@

$(SAM_VENV)/.stamp: tools/requirements-sam.lock
	@test -x $(SAM_VENV)/bin/python || { echo "creating $(SAM_VENV) with $(PYTHON)"; $(PYTHON) -m venv $(SAM_VENV); }
	@echo "installing aws-sam-cli (tools/requirements-sam.lock) into $(SAM_VENV)"
	@$(SAM_VENV)/bin/python $(PIP_LOCKED) tools/requirements-sam.lock $(PIP_FILTER)
	@touch $@

$(TOOLS_VENV)/.stamp: tools/requirements-tools.lock
	@test -x $(TOOLS_VENV)/bin/python || { echo "creating $(TOOLS_VENV) with $(PYTHON)"; $(PYTHON) -m venv $(TOOLS_VENV); }
	@echo "installing checkov, pip-audit, uv (tools/requirements-tools.lock) into $(TOOLS_VENV)"
	@$(TOOLS_VENV)/bin/python $(PIP_LOCKED) tools/requirements-tools.lock $(PIP_FILTER)
	@touch $@

# ---- locks --------------------------------------------------------------------------------------
lock: $(TOOLS_VENV)/.stamp ## regenerate every hashed lock from its input (UPGRADE=1: newest allowed releases)
	$(TOOLS_VENV)/bin/python tools/lock.py $(if $(UPGRADE),--upgrade)

lock-check: $(TOOLS_VENV)/.stamp ## fail if a lock does not match its input (a pin or range changed without `make lock`)
	$(TOOLS_VENV)/bin/python tools/lock.py --check

audit: $(TOOLS_VENV)/.stamp ## pip-audit every lock; says plainly when no vulnerability source is reachable
	$(TOOLS_VENV)/bin/python tools/audit.py

# ---- checks -------------------------------------------------------------------------------------
lint: $(VENV)/.stamp ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.stamp ## mypy over the package and the functions (config: pyproject.toml)
	$(VENV)/bin/mypy

import-lint: $(VENV)/.stamp ## import-linter: the package's layer contracts (pyproject.toml)
	$(PYPATH) $(VENV)/bin/lint-imports

fmt: $(VENV)/.stamp ## ruff format + autofix (rewrites files)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

pytest: $(VENV)/.stamp ## all tests under tests/
	@$(call pytest,tests)

test-unit: $(VENV)/.stamp ## tests/unit (no sockets)
	@$(call pytest,tests/unit)

test-integration: $(VENV)/.stamp ## tests/integration (moto, local servers)
	@$(call pytest,tests/integration)

test-e2e: $(VENV)/.stamp ## tests/e2e (local stack over HTTP)
	@$(call pytest,tests/e2e)

sam-validate: $(SAM_VENV)/.stamp ## sam validate --lint
	$(SAM) validate --lint --region $(REGION)

cfn-lint-expanded: $(VENV)/.stamp ## expand the SAM template offline, check invariants, cfn-lint (+ serverless rules) the result
	$(PY) tools/expand_template.py --region $(REGION)

# checkov's built-in CloudFormation checks on the expanded template, offline (--skip-download).
# Skips live in template.yaml (Metadata checkov skip, each with its justification).
checkov: $(VENV)/.stamp $(TOOLS_VENV)/.stamp ## checkov on the expanded template
	@$(PY) tools/expand_template.py --region $(REGION) --no-lint >/dev/null
	$(TOOLS_VENV)/bin/checkov -f build/template.expanded.json --framework cloudformation --skip-download \
	  --compact --quiet

# The BedrockModelArns parameter for a routing document: make bedrock-arns ROUTING=config/routing.json
bedrock-arns: $(VENV)/.stamp-local ## the Bedrock ARNs a routing document needs (BedrockModelArns parameter)
	@$(PY) tools/bedrock_arns.py $(ROUTING) --region $(REGION)

# sam build's Python workflow runs `python3.11` from PATH. If the machine has none, fall back to the
# venv's interpreter (a python3.11 venv ships a python3.11 link).
sam-build: $(SAM_VENV)/.stamp $(VENV)/.stamp ## sam build (python3.11, no container) into .aws-sam/
	@if command -v python3.11 >/dev/null; then $(SAM) build; \
	else echo "python3.11 not on PATH; using $(VENV)/bin"; PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) build; fi

# CI's critical path is .venv, then the checks on it and pytest. The SAM and tools venvs (sam,
# checkov, pip-audit, uv) are needed only by the checks after pytest, so a fresh clone installs them
# in the background meanwhile (their output: build/venv-background.log; a no-op when up to date).
test: $(VENV)/.stamp ## everything CI checks: lint + format, mypy, import contracts, pytest, locks, audit, sam validate, cfn-lint + checkov, sam build
	@mkdir -p build; { $(MAKE) $(SAM_VENV)/.stamp $(TOOLS_VENV)/.stamp > build/venv-background.log 2>&1; } & bg=$$!; \
	rc=0; for check in lint typecheck import-lint pytest; do $(MAKE) $$check || { rc=$$?; break; }; done; \
	if ! wait $$bg; then cat build/venv-background.log; echo "make test: installing $(SAM_VENV)/$(TOOLS_VENV) failed"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	for check in lock-check audit sam-validate cfn-lint-expanded checkov sam-build; do $(MAKE) $$check; done; \
	echo "make test: all checks passed"

# ---- running ------------------------------------------------------------------------------------
# Local data (table items, keys, jobs, queued messages, the KMS key) is kept in LOCAL_DATA_DIR across
# restarts; `make dev-reset` (or RESET=1 make dev) starts empty, LOCAL_DATA_DIR= keeps nothing.
LOCAL_DATA_DIR ?= .local-stack/data
dev: $(VENV)/.stamp-local ## local stack: moto + fake upstream + API on http://127.0.0.1:3000 + SQS poller
	LOCAL_DATA_DIR=$(LOCAL_DATA_DIR) $(PYPATH) $(PY) -m local.stack

dev-reset: ## make dev, starting with empty local data (deletes .local-stack/data)
	@RESET=1 $(MAKE) dev

# Operator commands against the running `make dev` (or TABLE_NAME + AWS env): make admin ARGS="keys create --tenant acme"
ARGS ?= --help
admin: $(VENV)/.stamp-local ## bin/llm-gateway-admin $(ARGS), e.g. ARGS="keys create --tenant acme"
	@bin/llm-gateway-admin $(ARGS)

# Terminal chat against the running `make dev` (or --base-url/--api-key in ARGS)
chat: $(VENV)/.stamp-local ## bin/llm-gateway chat $(ARGS)
	@bin/llm-gateway chat $(ARGS)

bench: $(VENV)/.stamp ## run every bench/*.py
	@shopt -s nullglob; scripts=(bench/*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no bench/*.py scripts"; exit 0; fi; \
	for s in "$${scripts[@]}"; do case "$$(basename $$s)" in _*) continue;; esac; \
	  echo "== $$s"; $(PYPATH) $(PY) "$$s"; done

clean: ## remove build outputs and caches (keeps the venvs)
	rm -rf .aws-sam build .pytest_cache .ruff_cache .local-stack
	find . -path ./$(VENV) -prune -o -path ./$(SAM_VENV) -prune -o -path ./$(TOOLS_VENV) -prune -o -name __pycache__ -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean ## clean + remove the venvs
	rm -rf $(VENV) $(SAM_VENV) $(TOOLS_VENV)
