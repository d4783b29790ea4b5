# The two commands of the README:
#   make run    set up .venv and run the whole pipeline with the local executor
#   make test   set up .venv (with dev tools) and run the tests
# Others: make analysis SCRIPT=compare_models ARGS='runs/a runs/b' (a script of analysis/ on the venv's
# Python), make floors (the tests on the lowest versions pyproject.toml allows), make lock (regenerate
# the lock files), make container / container-cpu (pipeline.sif from the CUDA lock, pipeline-cpu.sif from
# the CPU lock, labelled with the commit).
# Variables: PYTHON (≥ 3.11), TORCH (pip requirement for torch), LOCK, RUN_DIR, ARGS (extra CLI
# args), SCRIPT, PYTEST_ARGS, TEST_WORKERS, SIF, SIF_CPU, APPTAINER_FLAGS.

PYTHON ?= python3
VENV ?= .venv
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
# It must be the locks' torch (tests/test_lock.py checks); TORCH only picks the build.
TORCH ?= torch==2.13.0
# every package at the version CI tests: requirements/cpu.txt here, requirements/cuda.txt in the container
LOCK ?= requirements/cpu.txt
RUN_DIR ?= runs/default
SIF ?= pipeline.sif
PY := $(VENV)/bin/python

.PHONY: setup run analysis test lint floors lock container container-cpu cluster-up cluster-down clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m pipeline run --run-dir $(RUN_DIR) $(ARGS)

# a script of analysis/ (SCRIPT: its name, .py optional) with ARGS, on the venv's Python: the system's
# has no matplotlib. A missing or unknown SCRIPT stops make before setup, listing the scripts.
ANALYSIS_SCRIPTS := $(basename $(notdir $(wildcard analysis/*.py)))
SCRIPT_NAME = $(basename $(notdir $(SCRIPT)))
ifneq ($(filter analysis,$(MAKECMDGOALS)),)
ifeq ($(strip $(SCRIPT)),)
$(error make analysis needs SCRIPT=<name>, one of: $(ANALYSIS_SCRIPTS) (e.g. make analysis SCRIPT=compare_runs ARGS='runs/a runs/b'))
else ifeq ($(filter $(SCRIPT_NAME),$(ANALYSIS_SCRIPTS)),)
$(error make analysis: no script analysis/$(SCRIPT_NAME).py; the scripts are: $(ANALYSIS_SCRIPTS))
endif
endif
analysis: setup
	$(PY) analysis/$(SCRIPT_NAME).py $(ARGS)

# the tests on TEST_WORKERS processes (pytest-xdist; 0: in pytest's own, auto: one per core), a test file
# to a process (its module-scoped runs are made once)
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline tests

# a fresh venv with every lower bound of pyproject.toml pinned; the tests that need no Slurm run on it
floors:
	PYTHON=$(PYTHON) bash .ci/floors.sh $(PYTEST_ARGS)

# The lock files, from pyproject.toml (extras postgres and dev) for CPython 3.11 on x86_64 Linux:
#   requirements/cuda.txt  PyPI's torch (the CUDA build) and its nvidia-* / triton wheels: the container
#   requirements/cpu.txt   the same versions with the CPU build of torch, no CUDA wheels: make setup, CI
# The CPU wheel of torch comes from TORCH_CPU_WHEELS (this machine's wheel folder, else PyTorch's
# CPU index); its "+cpu" label is dropped in cpu.txt so that any build of that torch satisfies it.
UV_VERSION ?= 0.13.9
TORCH_CPU_WHEELS ?= $(if $(wildcard /opt/wheels/torch-*),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --extra postgres --extra dev --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --constraint $(VENV)/torch-pin.txt \
	--custom-compile-command "make lock" --quiet

lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	echo "$(TORCH)" > $(VENV)/torch-pin.txt
	mkdir -p requirements
	$(COMPILE) --output-file requirements/cuda.txt
	$(COMPILE) --find-links $(TORCH_CPU_WHEELS) --upgrade-package torch --output-file requirements/cpu.txt
	sed -i 's/^\(torch==[^+]*\)+cpu$$/\1/' requirements/cpu.txt
	@! grep -q '^nvidia-' requirements/cpu.txt || { echo "requirements/cpu.txt got the CUDA build of torch: is $(TORCH_CPU_WHEELS) reachable?" >&2; exit 1; }

# The Apptainer image, labelled with the source commit: pipeline.sif from the CUDA lock (GPU nodes),
# pipeline-cpu.sif from the CPU lock (CPU nodes, CI). containers/build.sh uses the host's Apptainer, or
# makes a Debian 13 root with Debian sid's (a host without an Apptainer package, e.g. Debian 12).
SIF_CPU ?= pipeline-cpu.sif
container:
	bash containers/build.sh cuda $(SIF)

container-cpu:
	bash containers/build.sh cpu $(SIF_CPU)

# a local single-node Slurm + PostgreSQL for the service tests (root, Debian/Ubuntu)
cluster-up:
	bash slurm/test-cluster.sh install
	bash slurm/test-cluster.sh up

cluster-down:
	bash slurm/test-cluster.sh down

clean:
	rm -rf $(VENV) .pytest_cache
