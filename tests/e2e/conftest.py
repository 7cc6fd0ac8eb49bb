"""pytest fixtures over the Envoy harness (harness.py): Envoys started per session or module."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness import MOCK_CONFIG, MODULE, MODULE_DIR, Envoy, render_config


@pytest.fixture(scope="session", autouse=True)
def built_module() -> Path:
    if not MODULE.exists():
        pytest.fail(f"{MODULE} is missing: run `make build` (make test does it)")
    return MODULE


@pytest.fixture(scope="session")
def start_envoy(tmp_path_factory):
    """Starts Envoys from a config (envoy/mock.yaml unless told) and stops them all at the end."""
    started: list[Envoy] = []

    def start(
        source: Path = MOCK_CONFIG,
        filter_config: str | None = None,
        module_dir: Path = MODULE_DIR,
        concurrency: int = 1,
        cluster_ports: dict[str, int | list[int]] | None = None,
        listener_ports: dict[str, int] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Envoy:
        workdir = tmp_path_factory.mktemp("envoy")
        config = render_config(
            source, workdir / "envoy.yaml", filter_config, cluster_ports, listener_ports
        )
        instance = Envoy(config, workdir, module_dir, concurrency, extra_env=extra_env)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def mock_envoy(start_envoy) -> Envoy:
    """Envoy serving envoy/mock.yaml exactly as `make run` does, but on free ports."""
    return start_envoy()


@pytest.fixture()
def client(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url, timeout=30) as http:
        yield http
    assert mock_envoy.alive(), f"Envoy died:\n{mock_envoy.log()}"
