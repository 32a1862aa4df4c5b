# Chronoverse on Ray — the two commands: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install up down status test lint protos

# (Re)install when pyproject.toml or the pins change; the stamp file records the last install.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[local,dev]'
	@touch $@

install: $(VENV)/.installed

up: install
	$(BIN)/chronoverse up

down:
	$(BIN)/chronoverse down

status:
	$(BIN)/chronoverse status

test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Regenerate the gRPC modules in serve_apps/grpc/v1 from its .proto files (needs grpcio-tools).
protos: install
	$(BIN)/python -m serve_apps.grpc.codegen
