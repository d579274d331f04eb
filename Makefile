# Two commands for a fresh machine: `make run` and `make test`. Both create .venv.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# this machine's pip prints a warning per package about missing local mirrors; hide those
PIP_QUIET := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: install run test test-fast lint bench serve sample clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(PIP_QUIET)
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | $(PIP_QUIET)
	touch $(STAMP)

install: $(STAMP)

## run the retrain flow on the bundled offline sample (AAPL, the tutorial's defaults)
run: install
	$(BIN)/tickercast retrain

## the whole suite, what CI runs
test: install
	$(BIN)/python -m pytest

## the suite without the slow tests
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

## every benchmark in bench/; rewrites bench/RESULTS.md
bench: install
	$(BIN)/python bench/run_all.py

## a local Prefect server plus the served deployments (Ctrl-C stops both)
serve: install
	$(BIN)/python deployments/serve.py --with-server

## rebuild data/sample/ from ../shared/data/prices
sample: install
	$(BIN)/python data/build_sample.py

clean:
	rm -rf $(VENV) data/lake data/models data/work data/results
