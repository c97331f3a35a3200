# Two commands from a fresh machine: `make demo` and `make test`. Each builds the venv and installs
# the package first; the local broker's jars are fetched by `streamproc broker start` on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# helm for the chart tests, built from source with the local Go (no Docker, no binary downloads).
# The build sits in a versioned directory, so changing HELM_VERSION rebuilds it; tests run .tools/bin/helm.
HELM_VERSION := v3.22.0
HELM_BUILD := .tools/helm-$(HELM_VERSION)/helm
HELM := .tools/bin/helm
GO ?= $(or $(shell command -v go 2>/dev/null),/usr/local/go/bin/go)

.PHONY: install demo test lint unit fuzz chaos docs helm bench broker-stop clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/streamproc demo

lint: install
	$(BIN)/ruff check streamproc tests handlers benchmarks examples
	$(BIN)/ruff format --check streamproc tests handlers benchmarks examples
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

# The property tests of tests/unit with far more examples than `make test` runs (tests/unit/conftest.py).
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest --timeout=0 tests/unit

# The chaos harness (SPEC §11): worker kills, broker kills, scaling and a rebalance storm, 20,000
# keyed and 20,000 unkeyed tasks each, on a broker of its own; prints the table (tests/chaos).
chaos: install
	$(BIN)/python -m tests.chaos

# The docs site (docs/, mkdocs.yml) into site/; --strict makes every warning an error (`make test` runs it).
# Not --quiet: it hides the warnings that --strict counts, so a broken link would pass.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/streamproc bench

helm: $(HELM)

$(HELM_BUILD):
	GOTOOLCHAIN=local GOBIN=$(CURDIR)/$(@D) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(HELM): $(HELM_BUILD)
	mkdir -p $(@D)
	ln -sfn ../helm-$(HELM_VERSION)/helm $@

test: lint docs $(HELM)
	$(BIN)/pytest

broker-stop: install
	$(BIN)/streamproc broker stop

clean: broker-stop
	rm -rf $(VENV)
