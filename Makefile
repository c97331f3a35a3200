# Two commands from a fresh machine: `make demo` and `make test`. Each builds the venv and installs
# the package first; the local broker's jars are fetched by `streamproc broker start` on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo test lint unit broker-stop clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/streamproc demo

lint: install
	$(BIN)/ruff check streamproc tests handlers benchmarks
	$(BIN)/ruff format --check streamproc tests handlers benchmarks
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

test: lint
	$(BIN)/pytest

broker-stop: install
	$(BIN)/streamproc broker stop

clean: broker-stop
	rm -rf $(VENV)
