# streamapp: `make run` (broker + worker on this machine) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/streamapp dev

lint: install
	$(BIN)/ruff check streamapp agents tables tests bench
	$(BIN)/ruff format --check streamapp agents tables tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -ra

bench: install
	$(BIN)/python bench/api_ingest.py

kafka-start: install
	$(BIN)/streamapp kafka start

kafka-stop: install
	$(BIN)/streamapp kafka stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
