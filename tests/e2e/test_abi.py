"""The module against the pinned Envoy binary: symbols, ABI version, and the version pin itself."""

from __future__ import annotations

import subprocess

from harness import ENVOY_BINARY, MODULE, PIN

SYMBOL_PREFIX = "envoy_dynamic_module_"
# Envoy statically links a Rust module whose copies of every hook name carry this prefix: the
# list of hooks this Envoy knows.
STATIC_HOOK_PREFIX = "hickory_dns_static_"


def dynamic_symbols(path, *flags: str) -> set[str]:
    out = subprocess.run(
        ["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_every_imported_callback_is_exported_by_the_pinned_envoy():
    imported = {s for s in dynamic_symbols(MODULE, "--undefined-only") if s.startswith(SYMBOL_PREFIX)}
    exported = {s for s in dynamic_symbols(ENVOY_BINARY, "--defined-only") if s.startswith(SYMBOL_PREFIX)}
    assert imported, "the module imports no Envoy callback at all: is this the right .so?"
    assert imported <= exported, f"missing from Envoy {PIN['ENVOY_VERSION']}: {sorted(imported - exported)}"


def test_every_exported_hook_is_one_the_pinned_envoy_knows():
    hooks = {
        s for s in dynamic_symbols(MODULE, "--defined-only") if s.startswith(SYMBOL_PREFIX + "on_")
    }
    known = {
        s.removeprefix(STATIC_HOOK_PREFIX)
        for s in dynamic_symbols(ENVOY_BINARY)
        if s.startswith(STATIC_HOOK_PREFIX + SYMBOL_PREFIX + "on_")
    }
    assert known, "could not read the hook list from the Envoy binary"
    assert hooks <= known, f"hooks Envoy does not know: {sorted(hooks - known)}"
    assert "envoy_dynamic_module_on_program_init" in hooks


def test_the_binary_is_the_pinned_envoy():
    version = subprocess.run(
        [str(ENVOY_BINARY), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"/{PIN['ENVOY_VERSION']}/" in version


def test_envoy_logs_the_abi_version_as_matched(mock_envoy):
    expected = f"Dynamic module ABI version {PIN['ENVOY_ABI_VERSION']} matched."
    assert expected in mock_envoy.log()
    assert "is deprecated" not in mock_envoy.log()
