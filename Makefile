# Two entry points for people (README): `make run` and `make test`. CI runs .ci/run -> `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test lint typecheck unit clean

$(STAMP): pyproject.toml setup.py src/taskcache/hashing/_core.c src/taskcache/hashing/_sha256_portable.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,all,bench]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/taskcache serve

demo: install
	$(BIN)/taskcache demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Benchmarks (issue #4): one table on stdout, docs/benchmarks.md and bench/results.json.
# `bench` is the full run (<= 15 min on 2 cores); `bench-quick` runs everything small (< 2 min).
.PHONY: bench bench-quick

bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick
