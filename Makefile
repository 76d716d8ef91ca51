# Lianxin: the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= .data

.PHONY: run test bootstrap lint typecheck bench migrate clean-data openapi clients demo

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

bootstrap: $(STAMP)

## Start PostgreSQL (embedded unless DATABASE_URL is set), migrate, run every app.
run: $(STAMP)
	$(PY) -m tools.run

## The whole test suite against a real PostgreSQL (throwaway embedded unless TEST_DATABASE_URL).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Regenerate the committed OpenAPI snapshot openapi/lianxin.json (after any API change).
openapi: $(STAMP)
	$(PY) -m tools.openapi_snapshot

## Generate the Python API client from the snapshot into dist/python/lianxin_client.
clients: $(STAMP)
	$(PY) -m tools.clients

migrate: $(STAMP)
	$(PY) -m tools.run --migrate-only

## Load the demo city (Jiaxing as the 2004 survey found it) into DATABASE_URL (migrated); a
## no-op when it is there. `make run` loads it by itself into an empty database.
demo: $(STAMP)
	$(PY) -m tools.demo $(DEMO_ARGS)

## Every benchmark in bench/ (or some: `make bench BENCH="gateway_overhead"`); results in bench/results/.
bench: $(STAMP)
	$(PY) -m bench $(BENCH)

clean-data:
	$(PY) -m tools.pg destroy $(DATA)/pg
