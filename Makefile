# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration flows bench clean

demo: $(STAMP)
	$(BIN)/growth demo

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit

integration: $(STAMP)
	$(BIN)/python -m pytest -m integration

flows: $(STAMP)
	$(BIN)/python -m pytest -m flows

# Not part of `make test`: seeds PostgreSQL at 100k/300k/1M accounts and compares our run
# with the floor and two peers (results: docs/performance.md). Exits non-zero on a missed target.
bench: $(STAMP)
	$(BIN)/python bench/run.py --sizes 100000,300000,1000000 --write docs/performance.md

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis
