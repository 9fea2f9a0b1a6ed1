# fanout: the quickstart is `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint install kafka-start kafka-stop clean promtool

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## test: install, start Kafka if none is running, lint, type-check, run every test, stop what it started
test: $(STAMP)
	scripts/test

## demo: start everything, publish sample events, show what the receiver got
demo: $(STAMP)
	scripts/demo

bench: $(STAMP)
	scripts/bench

lint: $(STAMP)
	$(BIN)/ruff check fanout tests scripts
	$(BIN)/ruff format --check fanout tests scripts
	$(BIN)/mypy --strict fanout

## promtool: build Prometheus' promtool once (pinned, cached in ~/.cache/fanout/promtool); the alert-rule tests use it
promtool:
	scripts/promtool --path

kafka-start:
	scripts/kafka start

kafka-stop:
	scripts/kafka stop

clean:
	scripts/kafka stop --clean || true
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find bench-results -mindepth 1 -maxdepth 1 ! -name published -exec rm -rf {} + 2>/dev/null || true
