"""Soak: llm-edge under a mixed workload for a set time, sampled as it runs (not a test).

One Envoy worker serves envoy/mock.yaml's mock while wrk cycles through every endpoint llm-edge
answers, streamed and not, and a malformed body; every interval the script prints Envoy's
resident memory, open file descriptors, threads, and the requests and non-2xx answers of that
interval (one in eight is the malformed body, answered 400 on purpose). A leak shows as memory
or descriptors that keep climbing after the first intervals.

    make soak                                  # 10 minutes, a sample a minute
    .venv/bin/python bench/soak.py --minutes 60 --interval 120

`--churn-keys` soaks a token budget instead: one key spends its hourly budget, then wrk sends
every request with a new random key (far more keys than `max_keys`), and each sample also asks
with the spent key, which must stay refused (`429`) for the whole soak. Once `max_keys` keys
owe tokens, new keys are refused too (the keys-full `429`), so nearly every churned request
counts as non-2xx: that is the budget keeping its debts rather than forgetting one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import json
import urllib.error
import urllib.request

from compare import CHAT, CHAT_PATH, ECHO_MOCK, LOAD_CPU, mixed_script, mock_envoy
from harness import proc_status
from passthrough import run_wrk_script


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# An hourly budget per API key, far fewer keys kept than the soak sends.
CHURNED_BUDGET = {**ECHO_MOCK, "budgets": {"max_keys": 1000, "limits": [
    {"name": "per_key", "tokens": 200, "per": "hour", "key": {"header": "x-api-key"}}]}}
# Every request under a key never seen before.
CHURN_SCRIPT = f"""
wrk.method = "POST"
wrk.body = {json.dumps(json.dumps(CHAT))}
wrk.headers["content-type"] = "application/json"
request = function()
  wrk.headers["x-api-key"] = "churn-" .. math.random(1, 1000000000)
  return wrk.format()
end
"""


def status_with_key(base_url: str, key: str) -> int:
    request = urllib.request.Request(f"{base_url}{CHAT_PATH}", json.dumps(CHAT).encode(),
                                     {"content-type": "application/json", "x-api-key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as refused:
        return refused.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=int, default=60, help="seconds per sample")
    parser.add_argument("--churn-keys", action="store_true", help="soak a budget with key churn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        envoy = mock_envoy(workdir, "soak", CHURNED_BUDGET if args.churn_keys else ECHO_MOCK)
        pid = envoy.process.pid
        script = CHURN_SCRIPT if args.churn_keys else mixed_script()
        try:
            spent = ""
            if args.churn_keys:
                while status_with_key(envoy.base_url, "spent") != 429:
                    pass
                spent = " Spent key |"
            print(f"| Elapsed | RSS (MB) | Open fds | Threads | Requests | Non-2xx | Socket errors |{spent}")
            print("|---|---|---|---|---|---|---|" + ("---|" if spent else ""))
            print(f"| 0 s | {proc_status(pid, 'VmRSS') / 1024:.1f} | {open_fds(pid)} | {proc_status(pid, 'Threads')} | | | |"
                  + (" 429 |" if spent else ""))
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                result = run_wrk_script(envoy.base_url, script, args.interval, workdir, LOAD_CPU)
                elapsed = time.monotonic() - started
                still = f" {status_with_key(envoy.base_url, 'spent')} |" if spent else ""
                print(f"| {elapsed:.0f} s | {proc_status(pid, 'VmRSS') / 1024:.1f} | {open_fds(pid)} | "
                      f"{proc_status(pid, 'Threads')} | {result['requests']:,} | {result['non_2xx']:,} | "
                      f"{result['socket_errors'] or 0} |{still}", flush=True)
                if still and still != " 429 |":
                    raise SystemExit("the spent key was admitted again under key churn")
            if not envoy.alive():
                raise SystemExit(f"Envoy died:\n{envoy.log()[-2000:]}")
        finally:
            envoy.stop()


if __name__ == "__main__":
    main()
