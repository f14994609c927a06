# FieldTrace: `make demo` and `make test` are the whole set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test test-fast lint bench bench-tools chromium services clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "FieldTrace needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -e ".[dev,bench]"
	@echo "compiling the stop-detection kernel (numba; kept in its cache)"
	$(BIN)/python -c "from geofence.stops import compile_kernels; compile_kernels()"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium + chromedriver drive the browser tests (never `playwright install`).
chromium:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium: $$(chromium --version 2>/dev/null | head -1)"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver; \
	fi

# Debian's nats-server (JetStream: the live bus), mosquitto (MQTT for IoT) and postgresql (the
# DuckLake catalog). The tests use 127.0.0.1:4222 / :1883 / :5432 when they answer and start
# throwaway instances otherwise (pg_ctl for PostgreSQL, through pytest-postgresql).
services:
	@if command -v nats-server >/dev/null && command -v mosquitto >/dev/null; then \
		echo "services: $$(nats-server --version 2>/dev/null), mosquitto present"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			nats-server mosquitto; \
	fi
	@if command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		echo "postgresql: $$(ls -d /usr/lib/postgresql/*/ 2>/dev/null | head -1)"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			postgresql; \
	fi

demo: install services
	$(BIN)/fieldtrace demo

test: install chromium services
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: install services
	$(BIN)/pytest -q -m "not browser and not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian's wrk drives the live receiver benchmark (bench/bench_live.py).
bench-tools:
	@command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk)

bench: install services bench-tools
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data/*.duckdb data/*.wal data/demo data/cache tests/artifacts bench/results
