# The two commands of the README:
#   make run    set up .venv and run the whole pipeline with the local executor
#   make test   set up .venv (with dev tools) and run the tests
# Variables: PYTHON (≥ 3.11), TORCH (pip requirement for torch), RUN_DIR, ARGS (extra CLI args),
# PYTEST_ARGS.

PYTHON ?= python3
VENV ?= .venv
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
TORCH ?= torch==2.13.0
RUN_DIR ?= runs/default
PY := $(VENV)/bin/python

.PHONY: setup run test lint cluster-up cluster-down clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m pipeline run --run-dir $(RUN_DIR) $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline tests

# a local single-node Slurm + PostgreSQL for the service tests (root, Debian/Ubuntu)
cluster-up:
	bash slurm/test-cluster.sh install
	bash slurm/test-cluster.sh up

cluster-down:
	bash slurm/test-cluster.sh down

clean:
	rm -rf $(VENV) .pytest_cache
