# fanout: the quickstart is `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo bench lint docs install kafka-start kafka-stop clean promtool

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## test: install, start Kafka if none is running, lint, type-check, run every test, stop what it started
test: $(STAMP)
	scripts/test

## test-fast: lint and the unit tests (no broker, no network; about a minute)
test-fast: lint
	$(BIN)/python -m pytest tests/unit -q

## demo: start everything, publish sample events, show what the receiver got
demo: $(STAMP)
	scripts/demo

bench: $(STAMP)
	scripts/bench

## lint: ruff, ruff format --check, mypy --strict, lint-imports (layer contracts), aiohttp's client only in fanout/http
lint: $(STAMP)
	scripts/lint

## docs: regenerate docs/configuration.md and docs/cli.md from the code (a unit test fails when they drift)
docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py

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
