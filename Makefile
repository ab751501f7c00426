# Parachute — the two commands a newcomer needs are `make demo` and `make test`.
# Every target does its own set-up (virtualenv, Prometheus, control-plane binaries).

PY := .venv/bin/python
PYTEST := $(PY) -m pytest
# `make test` runs on this many workers, each with its own local cluster. A test's waits are
# mostly sleeps, so three share two cores well (the suite: 41 min in one process, about 24 on
# two workers, 19 on three). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 3
CLUSTER_DIR ?= .cluster

.PHONY: help setup demo test test-quick unit integration lint typecheck format crds \
        cluster-up cluster-down e2e-kind bench bench-large clean

help:
	@echo "make demo        local cluster + Prometheus + operator + an example release"
	@echo "make test        lint, type-check, unit and integration tests (what CI runs)"
	@echo "make test-quick  unit tests and fast checks only"
	@echo "make crds        regenerate CRDs, RBAC and chart copies from the models"
	@echo "make cluster-up / cluster-down   the local control plane alone"
	@echo "make e2e-kind    the integration tests on kind (needs Docker)"
	@echo "make bench       benchmarks on the local cluster; prints figures"
	@echo "make bench-large the scale table's 10,000 Rollouts column (needs about an hour)"

setup:
	@bash testbed/setup.sh

demo: setup
	$(PY) -m testbed.demo --dir $(CLUSTER_DIR)

test: setup lint typecheck
	$(PYTEST) -n $(TEST_WORKERS) --dist worksteal --durations=25 tests/unit tests/integration

test-quick: setup lint typecheck
	$(PYTEST) tests/unit -m "not slow"

unit: setup
	$(PYTEST) tests/unit

integration: setup
	$(PYTEST) tests/integration

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	.venv/bin/lint-imports

typecheck: setup
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

crds: setup
	$(PY) -m parachute.crd .

cluster-up: setup
	$(PY) -m testbed.cluster up --dir $(CLUSTER_DIR)

cluster-down:
	$(PY) -m testbed.cluster down --dir $(CLUSTER_DIR)

e2e-kind: setup
	bash tests/e2e/kind.sh

bench: setup
	$(PY) -m bench

bench-large: setup
	$(PY) -m bench --only scale --rollouts 10000

clean: cluster-down
	rm -rf .cluster .venv .mypy_cache .pytest_cache .ruff_cache
