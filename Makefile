# Every target calls the `meterstream` CLI; the CLI is the one way to do each thing.
PYTHON ?= python3
VENV ?= .venv
MS := $(VENV)/bin/meterstream

.PHONY: system system-tests install demo up down status test test-unit test-faults test-clients lint clean bench cluster-up cluster-down
.DEFAULT_GOAL := help

help:
	@echo "make demo    start the local stack, produce sample events, run the job, tell what happened to them"
	@echo "make test    run every test (starts the local stack and stops it again)"
	@echo "make up | down | status | lint | test-unit | clean"
	@echo "make cluster-up | cluster-down   a standalone Flink session cluster (meterstream submit)"
	@echo "make test-faults   the long fault-injection suite, on a stack of its own"
	@echo "make test-clients  the Python, Node, Go and Java clients' tests (also in make test)"

# The one target that is not the CLI: it runs before there is a virtualenv. A JDK, Maven,
# PostgreSQL's server and Python's venv: installed when missing (root + apt-get), or the exact
# command to run is printed and make stops.
system:
	@PYTHON=$(PYTHON) bash scripts/ensure-system-packages.sh

# What only the tests need too: the SDKs' toolchains (Node.js, npm, Go) and promtool.
system-tests:
	@PYTHON=$(PYTHON) bash scripts/ensure-system-packages.sh --tests

# The filter drops one notice of setuptools about every editable install of a flat layout
# ("Please be careful with folders in your working directory with the same name as your
# package"): none of our folders is named meterstream but the package.
$(VENV)/.installed: pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: system $(VENV)/.installed

demo: install
	$(MS) demo

up: install
	$(MS) up

down:
	@if [ -x $(MS) ]; then $(MS) down; fi

status: install
	$(MS) status

# Unit, Flink, integration and end-to-end tests; the session fixture starts what is not running
# and stops what it started.
test: install system-tests
	$(VENV)/bin/python -m pytest

# The benchmark (docs/benchmarks.md): starts the local stack if needed, writes bench-results/.
bench: install
	$(MS) bench

# The long fault-injection run (`make test` runs the short one): more events, the TaskManager
# killed several times, PostgreSQL down a minute, the broker also killed. Its own stack, ports
# and .stack/faults; it never touches the local stack.
test-faults: install
	FAULT_SUITE=full $(VENV)/bin/python -m pytest -m faults tests/faults

cluster-up: install
	$(MS) cluster-up

cluster-down:
	@if [ -x $(MS) ]; then $(MS) cluster-down; fi

test-unit: install
	$(VENV)/bin/python -m pytest tests/unit meterstream -q

lint: install
	$(VENV)/bin/ruff check meterstream jobs tests
	$(VENV)/bin/ruff format --check meterstream jobs tests
	$(MS) schemas check
	$(MS) openapi --check

# The SDKs in clients/ (Node, Go, Java suites, the shared vectors, the live-server test);
# `make test` runs them too.
test-clients: install system-tests
	$(VENV)/bin/python -m pytest tests/clients

clean: down
	rm -rf .stack
