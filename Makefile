# streamapp: `make run` (broker + worker on this machine) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test check lint bench kafka-start kafka-stop clean

# Private Faust/aiokafka names: allowed only in streamapp/kafka/, the adapter (docs/architecture.md).
PRIVATE_API := _db_for_partition|_ensure_producer|_ensure_consumer|_subscription|\._thread\b|changelog_distribution|_waiters|set_persisted_offset|_fetch_max_wait_ms|_create_worker_consumer|_new_consumer_thread

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
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck deploy/prometheus/install.sh deploy/compose/init-secrets.sh
	@if grep -rnE '$(PRIVATE_API)' --include='*.py' streamapp agents tables | grep -v '^streamapp/kafka/'; then \
	  echo "lint: private Faust/aiokafka API outside streamapp/kafka/ (above)"; exit 1; fi

# Postfix's smtp-sink: a real SMTP fault peer for the sending tests.
# "No configuration" keeps the postfix daemon itself unconfigured and stopped.
/usr/sbin/smtp-sink:
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  echo "postfix postfix/mailname string localhost" | debconf-set-selections; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix; \
	else echo "note: run 'sudo apt-get install postfix' for the smtp-sink tests (skipped without it)"; fi

# Prometheus, promtool and amtool from Debian's packages, unpacked into .cache/ (tests/config/).
# No prerequisite: the binary keeps the package's file date, so a dependency would re-run it.
.cache/prometheus/bin/promtool:
	bash deploy/prometheus/install.sh

# OpenDKIM's library: the second, independent DKIM verifier of tests/mail/test_dkim.py.
/usr/sbin/opendkim-testkey:
	@if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends opendkim-tools \
	  || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends opendkim-tools); \
	else echo "note: run 'sudo apt-get install opendkim-tools' for the OpenDKIM verification test"; fi

test: lint /usr/sbin/smtp-sink /usr/sbin/opendkim-testkey .cache/prometheus/bin/promtool
	$(BIN)/pytest -q -ra --durations=25

# The fast loop: unit tests only (no broker, nothing marked slow).
check: lint
	$(BIN)/pytest -q -ra -m "not integration and not slow"

bench: install
	$(BIN)/python bench/api_ingest.py
	$(BIN)/python bench/import.py

kafka-start: install
	$(BIN)/streamapp kafka start

kafka-stop: install
	$(BIN)/streamapp kafka stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
