"""The module against the pinned Envoy binary: symbols, glibc versions, ABI version, and the pin itself."""

from __future__ import annotations

import re
import subprocess

import pytest

from harness import (
    ABI_VERSION_BEFORE_1_40,
    BEFORE_1_38,
    ENVOY_BINARY,
    ENVOY_VERSION_UNDER_TEST,
    MODULE,
    PIN,
)

SYMBOL_PREFIX = "envoy_dynamic_module_"


def dynamic_symbols(path, *flags: str) -> set[str]:
    out = subprocess.run(
        ["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def required_glibc_versions(path) -> set[tuple[int, ...]]:
    """The glibc symbol versions a binary needs, from its `.gnu.version_r` section."""
    out = subprocess.run(
        ["readelf", "--version-info", "--wide", str(path)], capture_output=True, text=True, check=True
    ).stdout
    needs = out.partition("Version needs section")[2]
    return {tuple(map(int, v.split("."))) for v in re.findall(r"Name: GLIBC_(\d+(?:\.\d+)+)", needs)}


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def test_the_module_needs_no_newer_glibc_than_the_pinned_envoy():
    module_needs = max(required_glibc_versions(MODULE))
    envoy_needs = max(required_glibc_versions(ENVOY_BINARY))
    assert module_needs <= envoy_needs, (
        f"{MODULE.name} needs GLIBC_{dotted(module_needs)} but Envoy {PIN['ENVOY_VERSION']} runs on "
        f"GLIBC_{dotted(envoy_needs)}: build it with `make build`, which links against an older glibc"
    )


def test_the_glibc_floor_pin_matches_the_pinned_envoy():
    """`GLIBC_FLOOR` is what `make build` and the Dockerfile link against: no newer than Envoy's own."""
    floor = tuple(map(int, PIN["GLIBC_FLOOR"].split(".")))
    assert max(required_glibc_versions(MODULE)) <= floor
    assert floor <= max(required_glibc_versions(ENVOY_BINARY))


def test_every_imported_callback_is_exported_by_the_pinned_envoy():
    imported = {s for s in dynamic_symbols(MODULE, "--undefined-only") if s.startswith(SYMBOL_PREFIX)}
    exported = {s for s in dynamic_symbols(ENVOY_BINARY, "--defined-only") if s.startswith(SYMBOL_PREFIX)}
    assert imported, "the module imports no Envoy callback at all: is this the right .so?"
    assert imported <= exported, f"missing from Envoy {PIN['ENVOY_VERSION']}: {sorted(imported - exported)}"


def test_every_exported_hook_is_one_the_pinned_envoy_knows():
    hooks = {
        s for s in dynamic_symbols(MODULE, "--defined-only") if s.startswith(SYMBOL_PREFIX + "on_")
    }
    # Envoy looks each hook up by name: the names in its binary are the hooks it knows.
    pattern = re.compile(rb"%son_[a-z0-9_]+" % SYMBOL_PREFIX.encode())
    known = {name.decode() for name in pattern.findall(ENVOY_BINARY.read_bytes())}
    assert len(known) > 20, "could not read the hook list from the Envoy binary"
    assert hooks <= known, f"hooks Envoy does not know: {sorted(hooks - known)}"
    assert "envoy_dynamic_module_on_program_init" in hooks


def test_the_binary_is_the_release_under_test():
    version = subprocess.run(
        [str(ENVOY_BINARY), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"/{ENVOY_VERSION_UNDER_TEST}/" in version


@pytest.mark.skipif(not BEFORE_1_38, reason="1.38 and later log the ABI version they matched")
def test_envoy_1_37_loads_the_module_with_its_abi_hash(mock_envoy):
    """1.37 checks a 64-hex ABI hash strictly and logs nothing when it matches: the module loading
    and configuring at all is the proof."""
    assert "llm_edge: filter config accepted" in mock_envoy.log()
    assert "ABI version mismatch" not in mock_envoy.log()


@pytest.mark.skipif(BEFORE_1_38, reason="1.37 logs nothing when its ABI hash matches")
def test_envoy_logs_the_abi_version_as_matched(mock_envoy):
    """llm-edge answers each release with the ABI string it expects: the pin's for 1.40, the
    older one for 1.38 and 1.39 (which would warn, not refuse, about any other)."""
    if ENVOY_VERSION_UNDER_TEST == PIN["ENVOY_VERSION"]:
        abi = PIN["ENVOY_ABI_VERSION"]
    else:
        abi = ABI_VERSION_BEFORE_1_40
    assert f"Dynamic module ABI version {abi} matched." in mock_envoy.log()
    assert "is deprecated" not in mock_envoy.log()
