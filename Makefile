# Lianxin: the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= .data

.PHONY: fuzz backup restore run test bootstrap lint typecheck bench migrate clean-data openapi clients demo

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

## Generate the API clients from the snapshot: dist/python/lianxin_client and dist/typescript/.
clients: $(STAMP)
	$(PY) -m tools.clients

migrate: $(STAMP)
	$(PY) -m tools.run --migrate-only

## Load the demo city (Jiaxing as the 2004 survey found it) into DATABASE_URL (migrated); a
## no-op when it is there. `make run` loads it by itself into an empty database.
demo: $(STAMP)
	$(PY) -m tools.demo $(DEMO_ARGS)

## The benchmark suite (or some: `make bench BENCH="gateway_overhead"`): one table of figures
## next to baselines measured in the same run; bench/results/summary.json and <name>.json.
bench: $(STAMP)
	$(PY) -m bench $(BENCH)

## Fuzz the API long (schemathesis through the gateway of a running system, tests/fuzz/):
## FUZZ_EXAMPLES per operation and the coverage phase, then FUZZ_STATEFUL_EXAMPLES chains of
## up to FUZZ_STATEFUL_STEPS calls; the per-operation phase stops after about FUZZ_SECONDS.
FUZZ_EXAMPLES ?= 300
FUZZ_STATEFUL_EXAMPLES ?= 300
FUZZ_STATEFUL_STEPS ?= 15
FUZZ_SECONDS ?= 1800
fuzz: $(STAMP)
	FUZZ_LONG=1 FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_STATEFUL_EXAMPLES=$(FUZZ_STATEFUL_EXAMPLES) \
	FUZZ_STATEFUL_STEPS=$(FUZZ_STATEFUL_STEPS) FUZZ_SECONDS=$(FUZZ_SECONDS) \
	$(PY) -m pytest tests/fuzz -p no:cacheprovider $(PYTEST_ARGS)

## Back up the whole database (DATABASE_URL, else make run's) to .data/backups/ (tools/backup.py).
backup: $(STAMP)
	$(PY) -m tools.backup backup $(BACKUP_ARGS)

## Restore a backup into an empty or new database: `make restore FILE=… [DB=new_name]`.
restore: $(STAMP)
	@test -n "$(FILE)" || { echo "usage: make restore FILE=.data/backups/<file>.dump [DB=name]"; exit 2; }
	$(PY) -m tools.backup restore "$(FILE)" $(if $(DB),--database "$(DB)") $(RESTORE_ARGS)

clean-data:
	$(PY) -m tools.pg destroy $(DATA)/pg
