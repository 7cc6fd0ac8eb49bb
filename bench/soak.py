"""Soak: llm-edge under a mixed workload for a set time, sampled as it runs (not a test).

One Envoy worker serves envoy/mock.yaml's mock while wrk cycles through every endpoint llm-edge
answers, streamed and not, and a malformed body; every interval the script prints Envoy's
resident memory, open file descriptors, threads, and the requests and non-2xx answers of that
interval (one in eight is the malformed body, answered 400 on purpose). A leak shows as memory
or descriptors that keep climbing after the first intervals.

    make soak                                  # 10 minutes, a sample a minute
    .venv/bin/python bench/soak.py --minutes 60 --interval 120
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from compare import ECHO_MOCK, LOAD_CPU, mixed_script, mock_envoy
from harness import proc_status
from passthrough import run_wrk_script


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=int, default=60, help="seconds per sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        envoy = mock_envoy(workdir, "soak", ECHO_MOCK)
        pid = envoy.process.pid
        try:
            print("| Elapsed | RSS (MB) | Open fds | Threads | Requests | Non-2xx | Socket errors |")
            print("|---|---|---|---|---|---|---|")
            print(f"| 0 s | {proc_status(pid, 'VmRSS') / 1024:.1f} | {open_fds(pid)} | {proc_status(pid, 'Threads')} | | | |")
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                result = run_wrk_script(envoy.base_url, mixed_script(), args.interval, workdir, LOAD_CPU)
                elapsed = time.monotonic() - started
                print(f"| {elapsed:.0f} s | {proc_status(pid, 'VmRSS') / 1024:.1f} | {open_fds(pid)} | "
                      f"{proc_status(pid, 'Threads')} | {result['requests']:,} | {result['non_2xx']:,} | "
                      f"{result['socket_errors'] or 0} |", flush=True)
            if not envoy.alive():
                raise SystemExit(f"Envoy died:\n{envoy.log()[-2000:]}")
        finally:
            envoy.stop()


if __name__ == "__main__":
    main()
