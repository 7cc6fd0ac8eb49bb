"""The Dockerfile, read without a Docker engine: hadolint, its stages and versions against the pin,
and the paths it installs against the ones the manifests use."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import PIN, REPO

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
MODULE_PATH = "/usr/local/lib/llm-edge/libllm_edge.so"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        logical.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return logical


def stages() -> list[list[tuple[str, str]]]:
    """The build stages, each from its FROM to the next; global ARGs before the first are dropped."""
    found: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, arguments))
    return found


def global_args() -> dict[str, str]:
    args = {}
    for keyword, arguments in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = default
    return args


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_report_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    result = subprocess.run(
        [str(HADOLINT), str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3008" in result.stdout or "DL3015" in result.stdout, result.stdout


def test_the_envoy_version_default_is_the_pin():
    assert global_args()["ENVOY_VERSION"] == PIN["ENVOY_VERSION"]


def test_make_image_passes_the_pin_as_the_build_argument():
    makefile = (REPO / "Makefile").read_text()
    assert "--build-arg ENVOY_VERSION=$(ENVOY_VERSION)" in makefile


def test_a_pinned_rust_builder_then_the_official_envoy_image():
    builder, final = stages()
    assert re.fullmatch(r"\d+\.\d+\.\d+", global_args()["RUST_VERSION"]), "pin Rust to x.y.z"
    assert builder[0] == ("FROM", "rust:${RUST_VERSION}-slim-bookworm AS builder")
    assert final[0] == ("FROM", "envoyproxy/envoy:v${ENVOY_VERSION}")


def test_the_builder_builds_with_the_make_recipe():
    """`make build` links against GLIBC_FLOOR; a bare `cargo build` in the image would not."""
    builder, _ = stages()
    runs = [arguments for keyword, arguments in builder if keyword == "RUN"]
    assert any(run.startswith("make build") for run in runs), runs
    assert not any("cargo build" in run for run in runs), runs
    copies = [arguments for keyword, arguments in builder if keyword == "COPY"]
    assert "Makefile envoy-version.env ./" in copies, "the pin must reach the builder"


def test_the_final_image_installs_the_module_where_envoy_looks():
    _, final = stages()
    assert ("COPY", f"--from=builder /out/libllm_edge.so {MODULE_PATH}") in final
    env = [arguments for keyword, arguments in final if keyword == "ENV"]
    assert f"ENVOY_DYNAMIC_MODULES_SEARCH_PATH={MODULE_PATH.rsplit('/', 1)[0]}" in env


def test_the_default_config_is_the_labs_mock():
    _, final = stages()
    assert ("COPY", "manifests/base/envoy.yaml /etc/envoy/envoy.yaml") in final
    assert (REPO / "manifests/base/envoy.yaml").is_file()
    assert final[-1] == ("CMD", '["envoy", "-c", "/etc/envoy/envoy.yaml"]')


def test_the_image_runs_as_a_numeric_non_root_user():
    _, final = stages()
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def copied_sources() -> list[str]:
    """Every path the build copies from the context (not from another stage)."""
    sources = []
    for keyword, arguments in instructions():
        words = arguments.split()
        if keyword == "COPY" and not words[0].startswith("--from="):
            sources += [word.rstrip("/") for word in words[:-1]]
    return sources


@pytest.mark.parametrize("source", copied_sources())
def test_what_the_build_copies_exists_and_is_not_ignored(source):
    ignored = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert (REPO / source).exists()
    assert not any(source == pattern or source.startswith(pattern + "/") for pattern in ignored)
