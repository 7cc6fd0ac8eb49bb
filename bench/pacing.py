"""Pacing accuracy: how closely paced mock streams keep their configured timing.

Starts the real pinned Envoy with llm-edge (one worker unless --workers), opens N
concurrent streams whose first token is due after --ttft ms and every next one --itl ms later, and
measures at the client when each token arrives. Reports, over all streams, the error of time to
first token and of every inter-token gap against the configured value (p50, p90, p99, max), and
the Envoy process's CPU time.

The client is native (examples/pacing_client.rs: one epoll loop), so that the figures are Envoy's
and llm-edge's timing rather than an interpreter's scheduling; they still include the kernel's
delivery to the client. After a warm-up stream has started llm-edge's pacing thread, the Envoy
worker threads get CPU 0 to themselves; every other thread (Envoy's main thread, the pacing
thread, the client) shares CPU 1.

    make bench-pacing                       # 1,000 streams
    .venv/bin/python bench/pacing.py --streams 200 --ttft 50 --itl 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import MOCK_CONFIG, REPO, Envoy, render_config  # noqa: E402

CHAT = "/v1/chat/completions"
# Built by `make bench` and `make bench-pacing` (cargo build --release --example pacing_client).
CLIENT = REPO / "target" / "release" / "examples" / "pacing_client"
WORKER_CPU = 0
OTHER_CPU = 1


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"p50 {pick(0.50):6.2f}  p90 {pick(0.90):6.2f}  p99 {pick(0.99):6.2f}  "
        f"max {ordered[-1]:6.2f}  (ms, n={len(values)})"
    )


def request_bytes(tokens: int) -> bytes:
    text = " ".join(["word"] * tokens)  # one o200k token per word
    body = json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": text}]}
    ).encode()
    return (
        f"POST {CHAT} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def run(envoy: Envoy, streams: int, tokens: int, workdir: Path) -> dict:
    """The native client's report: each stream's time to first token and gaps, in ms."""
    request_file = workdir / "request.http"
    request_file.write_bytes(request_bytes(tokens))
    out = subprocess.run(
        ["taskset", "-c", str(OTHER_CPU), str(CLIENT), str(envoy.port), str(streams), str(request_file)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)


def give_workers_their_cpu(pid: int) -> list[Path]:
    """Envoy's worker threads (named `wrk:worker_<n>`) onto WORKER_CPU, its other threads onto
    OTHER_CPU; returns the workers' /proc task directories."""
    workers = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        worker = (task / "comm").read_text().startswith("wrk:")
        cpu = WORKER_CPU if worker else OTHER_CPU
        subprocess.run(["taskset", "-p", "-c", str(cpu), task.name], check=True, capture_output=True)
        if worker:
            workers.append(task)
    return workers


def cpu_seconds(proc: Path) -> float:
    """User and system CPU time of a process (/proc/<pid>) or thread (/proc/<pid>/task/<tid>)."""
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(streams: int, ttft: int, itl: int, tokens: int, workers: int, load: dict | None = None) -> dict:
    """Runs `streams` paced streams against a fresh Envoy; returns their errors (ms) and CPU use.
    `load`, when given, is the mock's `load` section (admission, load factor, prefix cache)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, streams * 2 + 256)), hard))
    config = {"mock": {"latency": {"time_to_first_token_ms": ttft, "inter_token_ms": itl}}}
    if load is not None:
        config["mock"]["load"] = load
    with tempfile.TemporaryDirectory() as workdir:
        path = render_config(MOCK_CONFIG, Path(workdir) / "envoy.yaml", json.dumps(config))
        envoy = Envoy(path, Path(workdir), concurrency=workers)
        try:
            run(envoy, 1, 2, Path(workdir))  # starts the pacing thread, which is then pinned too
            workers = give_workers_their_cpu(envoy.process.pid)
            process = Path(f"/proc/{envoy.process.pid}")
            cpu_before = cpu_seconds(process)
            workers_before = sum(map(cpu_seconds, workers))
            wall = time.perf_counter()
            report = run(envoy, streams, tokens, Path(workdir))
            wall = time.perf_counter() - wall
            cpu = cpu_seconds(process) - cpu_before
            worker_cpu = sum(map(cpu_seconds, workers)) - workers_before
        finally:
            envoy.stop()
    results = report["streams"]
    gaps = [gap for stream in results for gap in stream["gaps_ms"]]
    return {
        "failed": report["failed"],
        "failure": report["failure"],
        "ttft_errors": [abs(stream["ttft_ms"] - ttft) for stream in results],
        "gap_errors": [abs(gap - itl) for gap in gaps],
        "mean_gap": statistics.fmean(gaps) if gaps else float("nan"),
        "cpu_share": cpu / wall,
        # The workers' CPU over the run's wall time, and over the tokens they wrote (their
        # requests' accepting and answering included).
        "worker_share": worker_cpu / len(workers) / wall,
        "worker_us_per_token": 1e6 * worker_cpu / max(1, len(gaps) + len(results)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--ttft", type=int, default=100, help="configured time to first token, ms")
    parser.add_argument("--itl", type=int, default=20, help="configured inter-token latency, ms")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per reply")
    parser.add_argument("--workers", type=int, default=1, help="Envoy worker threads")
    args = parser.parse_args()

    result = measure(args.streams, args.ttft, args.itl, args.tokens, args.workers)
    print(f"{args.streams} concurrent streams x {args.tokens} tokens on {args.workers} Envoy worker(s), "
          f"TTFT {args.ttft} ms, ITL {args.itl} ms")
    if result["ttft_errors"]:
        print(f"TTFT error:          {percentiles(result['ttft_errors'])}")
        print(f"inter-token error:   {percentiles(result['gap_errors'])}")
    print(f"mean inter-token gap {result['mean_gap']:.2f} ms")
    print(f"Envoy CPU: {100 * result['cpu_share']:.0f}% of one core; its worker(s) busy "
          f"{100 * result['worker_share']:.0f}% of the run, {result['worker_us_per_token']:.1f} us per token")
    if result["failed"]:
        print(f"{result['failed']} streams failed, the first with {result['failure']}")


if __name__ == "__main__":
    main()
