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

# Postfix's smtp-sink: a real SMTP fault peer for the sending tests.
# "No configuration" keeps the postfix daemon itself unconfigured and stopped.
/usr/sbin/smtp-sink:
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  echo "postfix postfix/mailname string localhost" | debconf-set-selections; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix; \
	else echo "note: run 'sudo apt-get install postfix' for the smtp-sink tests (skipped without it)"; fi

test: lint /usr/sbin/smtp-sink
	$(BIN)/pytest -q -ra

bench: install
	$(BIN)/python bench/api_ingest.py
	$(BIN)/python bench/import.py

kafka-start: install
	$(BIN)/streamapp kafka start

kafka-stop: install
	$(BIN)/streamapp kafka stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
