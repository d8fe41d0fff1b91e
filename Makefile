# Two commands: `make run` sets everything up and runs Outpost; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test lint typecheck unit bench screenshots clean system-deps k8s-smoke

run: $(STAMP)
	$(BIN)/outpost up

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite takes 30-40 minutes (docs/testing.md); a hang must not eat CI's 90: SIGINT after 75 prints what ran
# and where it stood, with time left for the setup before it (a few minutes) and the report.
unit: $(STAMP)
	timeout -s INT -k 60 75m $(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/dispatch.py --write docs/benchmarks.md
	$(BIN)/python bench/cli_start.py --write docs/benchmarks.md
	$(BIN)/python bench/metrics_scrape.py --write docs/benchmarks.md

# The Kubernetes runner end to end on a real cluster (none can run here: never run in CI). Needs KUBECONFIG,
# OUTPOST_URL and OUTPOST_TOKEN (a control plane the cluster's pods reach) and OUTPOST_SMOKE_IMAGE (the runner image).
k8s-smoke: $(STAMP)
	@test -n "$(KUBECONFIG)" || { echo "usage: make k8s-smoke KUBECONFIG=FILE (see docs/kubernetes.md)"; exit 2; }
	KUBECONFIG="$(KUBECONFIG)" $(BIN)/python -m tests.kube.smoke

# Screenshots of the web UI's main pages (real control plane, runner and Debian's Chromium) for the README.
screenshots: $(STAMP)
	$(BIN)/python -m tests.ui.screenshots docs/screenshots

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Outpost needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv --clear $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .outpost .pytest_cache .mypy_cache .ruff_cache
