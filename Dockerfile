# llm-edge: Envoy with the llm-edge dynamic module, serving the mock by default.
#
#   make image        # = docker build --build-arg ENVOY_VERSION=<envoy-version.env> -t llm-edge:<version> .
#   docker run --rm -p 10000:10000 llm-edge:1.40.0
#
# ENVOY_VERSION must equal ENVOY_VERSION in envoy-version.env (`make test` checks the default
# below): the module is built against that Envoy's ABI and will not load into another.
ARG ENVOY_VERSION=1.40.0
ARG RUST_VERSION=1.95.0

# Builds the release module with `make build`, exactly as on a workstation: cargo-zigbuild links it
# against glibc GLIBC_FLOOR (envoy-version.env), the newest version the Envoy binary itself needs.
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
# make runs the build; python3-venv holds PyPI's zig, which cargo-zigbuild links with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make=4.3-4.1 python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build tools first, in their own layer: source changes do not reinstall them.
COPY Makefile envoy-version.env ./
RUN make tools
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN make build \
 && install -D -m 0644 "target/$(uname -m)-unknown-linux-gnu/release/libllm_edge.so" /out/libllm_edge.so

# The official Envoy image of the pinned release, with the module and a default config added.
FROM envoyproxy/envoy:v${ENVOY_VERSION}
COPY --from=builder /out/libllm_edge.so /usr/local/lib/llm-edge/libllm_edge.so
# The mock on 0.0.0.0:10000, admin on :9901: the same file the kind lab's ConfigMap carries.
COPY manifests/base/envoy.yaml /etc/envoy/envoy.yaml
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/llm-edge
# The image's unprivileged `envoy` user; numeric, so Kubernetes can verify runAsNonRoot.
USER 101:101
EXPOSE 10000 9901
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
