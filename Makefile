# Linli: `make demo` runs everything on embedded defaults; `make test` runs the whole suite.
# Both set themselves up on a fresh Debian/Ubuntu machine with Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# sudo only when not already root (CI and containers run as root).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests run for real: broker, InfluxDB 1.x, serial pty pairs, browser;
# and a Chinese font (fonts-noto-cjk) for the pages, reports and PDFs Chromium renders.
SYSTEM_TOOLS := mosquitto:mosquitto influxd:influxdb socat:socat chromium:chromium

.PHONY: demo test lint typecheck unit system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Linli needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/linli demo

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -p no:cacheprovider tests/test_architecture.py

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest

# Speed and memory figures for docs/benchmarks.md (not part of the tests).
bench: $(STAMP) system-deps
	$(BIN)/python bench/parsers.py
	$(BIN)/python bench/modbus_cycle.py
	$(BIN)/python bench/influx.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/compliance.py
	$(BIN)/python bench/screens.py
	$(BIN)/python bench/screen_memory.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
