"""pytest fixtures over the Envoy harness (harness.py): Envoys started per session or module.

The tests sit in folders by the capability they test, as src/ does (mock, edge, accounting, abi,
clients, lab); the helpers they share sit here at the root, which pytest puts on sys.path with
this file. The folders are not packages, so a test file's name must be unique across them.

`--shuffle SEED` runs the modules, and the tests within each, in an order drawn from SEED: no test
may depend on another having run before it (a module's shared Envoy is still started once)."""

from __future__ import annotations

import random
from itertools import groupby
from pathlib import Path

import httpx
import pytest

from harness import (
    LAB_CONFIG,
    MOCK_CONFIG,
    MODULE,
    MODULE_DIR,
    Envoy,
    render_config,
    unused_loopback_port,
)


def pytest_addoption(parser):
    parser.addoption("--shuffle", type=int, metavar="SEED",
                     help="run modules and their tests in an order drawn from SEED")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Shuffles before pytest groups the tests of each module-scoped fixture parameter, so a
    parametrized Envoy still starts once per parameter."""
    seed = config.getoption("--shuffle")
    if seed is None:
        return
    draw = random.Random(seed)
    modules = [list(tests) for _, tests in groupby(items, key=lambda item: item.path)]
    draw.shuffle(modules)
    for tests in modules:
        draw.shuffle(tests)
    items[:] = [item for tests in modules for item in tests]


def pytest_report_header(config):
    seed = config.getoption("--shuffle")
    return None if seed is None else f"tests shuffled with seed {seed}"


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
def start_lab(start_envoy):
    """Starts envoy/lab.yaml, its edge's provider cluster pointed at its own mock_provider
    listener."""

    def start(concurrency: int = 1) -> Envoy:
        port = unused_loopback_port()
        return start_envoy(
            LAB_CONFIG,
            listener_ports={"mock_provider": port},
            cluster_ports={"provider": port},
            concurrency=concurrency,
        )

    return start


@pytest.fixture(scope="session")
def mock_envoy(start_envoy) -> Envoy:
    """Envoy serving envoy/mock.yaml exactly as `make run` does, but on free ports."""
    return start_envoy()


@pytest.fixture()
def client(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url, timeout=30) as http:
        yield http
    assert mock_envoy.alive(), f"Envoy died:\n{mock_envoy.log()}"
