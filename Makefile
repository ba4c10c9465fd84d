# Taleweaver: `make run` and `make test` each set themselves up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run serve test test-fast bench lint format browser postgresql clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this CPU build lies on this disk; a loose requirement would pull CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

PORT ?= 8765

SERVE_STAMP := $(VENV)/.installed-serve

# Ray Serve for the model service; torch named again so pip keeps the pinned CPU build.
$(SERVE_STAMP): $(STAMP) requirements-serve.txt
	$(PY) -m pip install -q -r requirements-serve.txt torch==2.13.0
	touch $(SERVE_STAMP)

## serve: the model service on a local Ray cluster (python -m model.serve --help for replicas, host, port)
serve: $(SERVE_STAMP)
	exec $(PY) -m model.serve

## run: the bot on Discord when DISCORD_TOKEN is set, else the local playground (make run PORT=9000)
run: $(STAMP)
	@if [ -n "$$DISCORD_TOKEN" ]; then exec $(PY) bot.py; else exec $(PY) -m playground --port $(PORT); fi

## browser: Debian's Chromium for the browser test (skipped when it is already there)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and cannot be installed (not root)"; exit 1; fi; }

## postgresql: Debian's PostgreSQL server binaries for the store's tests (skipped when they are there)
PG_BIN ?= $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgresql:
	@[ -n "$(PG_BIN)" ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL's server is missing and cannot be installed (not root)"; exit 1; fi; }

## test: the whole suite, on CPU, offline
test: $(STAMP) $(SERVE_STAMP) browser postgresql
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP) postgresql
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow and not browser"

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $(BENCH_STAMP)

## bench: the benchmarks (tables printed, JSON under bench/results/)
bench: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench

## lint: ruff's checks and its formatting, as CI runs them
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache bench/results
