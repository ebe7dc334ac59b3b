# Two commands matter: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest redis-server postgres fault-table bench loadtest soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## demo: the shop service on the embedded store (fakeredis, SQLite; its saga orchestrator,
## outbox relay and read-model consumer in-process), driven by a retrying client.
demo: $(STAMP)
	$(PY) -m loadtests.demo

## test: lint, type-check and the whole test suite against real redis-server processes.
test: $(STAMP) redis-server postgres lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) redis-server postgres
	$(VENV)/bin/pytest -q -p no:cacheprovider

## redis-server: tests start their own servers; make sure the binary exists.
redis-server:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "redis-server missing: installing Debian's redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
		echo "redis-server is required for the tests: install it (e.g. 'sudo apt-get install redis-server')" >&2; \
		exit 1; \
	fi

## postgres: tests start throwaway PostgreSQL servers (initdb + pg_ctl); make sure the binaries
## exist. Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries missing: installing Debian's postgresql"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "PostgreSQL (initdb, pg_ctl) is required for the tests: install it (e.g. 'sudo apt-get install postgresql')" >&2; \
		exit 1; \
	fi

## fault-table: rerun the fault matrix and rewrite the README's failure table from it.
fault-table: $(STAMP) redis-server
	$(PY) -m tests.idemkit.fault_matrix --write README.md

## bench: all benchmarks; writes docs/BENCHMARKS.md (`$(PY) -m bench failover` for one).
bench: $(STAMP) redis-server
	$(PY) -m bench

## loadtest: a 20 s Locust run with verification, against the shop or your own service:
##   make loadtest FAULT=restart-redis                 (kill-worker, pause-worker)
##   make loadtest FAULT=kill-orchestrator             (pause-orchestrator, kill-relay,
##                                                      pause-relay, kill-consumer)
##   make loadtest START="uvicorn app:app --port {port} --workers 2" LOCUSTFILE=f.py FAULT=kill-worker
##   make loadtest TARGET=http://127.0.0.1:8000 LOCUSTFILE=f.py DURATION=60s
loadtest: $(STAMP) redis-server postgres
	$(PY) -m loadtests run --duration $(or $(DURATION),20s) $(if $(FAULT),--fault $(FAULT),) \
		$(if $(START),--start '$(START)',) $(if $(TARGET),--target '$(TARGET)',) \
		$(if $(LOCUSTFILE),--locustfile '$(LOCUSTFILE)',) \
		$(if $(DATABASE),--database '$(DATABASE)',)

## soak: the long versions of the fault and load tests (the failover matrix among them), then
## the idempotency and lock suites on every topology (single Redis, Cluster, Sentinel).
soak: $(STAMP) redis-server postgres
	$(VENV)/bin/pytest -q -p no:cacheprovider --soak -m soak
	$(VENV)/bin/pytest -q -p no:cacheprovider --topology=all tests/idemkit tests/locks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
