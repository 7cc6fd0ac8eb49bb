"""Pacing accuracy: how closely paced mock streams keep their configured timing.

Starts the real pinned Envoy with llm-edge (one worker unless --workers), opens N concurrent streams whose first
token is due after --ttft ms and every next one --itl ms later, and measures at the client when each
token step arrives. Reports, over all streams, the error of time to first token and of every
inter-token gap against the configured value (p50, p90, p99, max), and the Envoy process's CPU time.

The client is Python asyncio on the same two cores, so the figures are an upper bound on
llm-edge's own error: they include the client's scheduling delays.

    make bench-pacing                       # 1,000 streams
    .venv/bin/python bench/pacing.py --streams 200 --ttft 50 --itl 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import MOCK_CONFIG, Envoy, render_config  # noqa: E402

CHAT = "/v1/chat/completions"


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"p50 {pick(0.50):6.2f}  p90 {pick(0.90):6.2f}  p99 {pick(0.99):6.2f}  "
        f"max {ordered[-1]:6.2f}  (ms, n={len(values)})"
    )


async def one_stream(port: int, request: bytes) -> tuple[float, list[float]]:
    """Returns (time to first token, inter-token gaps), in ms, timed at each socket read.

    A raw HTTP/1.1 client on asyncio streams: an HTTP library's own scheduling would add more
    noise than the pacing being measured.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    arrivals: list[float] = []
    first = b""
    started = time.perf_counter()
    writer.write(request)
    await writer.drain()
    while True:
        data = await reader.read(65536)
        if not data:
            break
        now = time.perf_counter()
        first = first or data[:120]
        # A token: a chunk with non-empty content (the role chunk's content is "").
        tokens = data.count(b'"content":"') - data.count(b'"content":""')
        arrivals.extend([now] * tokens)
        if b"[DONE]" in data:
            break
    writer.close()
    if not arrivals:
        raise ConnectionError(f"no token arrived; the stream began {first!r}")
    ttft = (arrivals[0] - started) * 1000
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    return ttft, gaps


async def run(envoy: Envoy, streams: int, tokens: int) -> list[tuple[float, list[float]]]:
    text = " ".join(["word"] * tokens)  # one o200k token per word
    body = json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": text}]}
    ).encode()
    request = (
        f"POST {CHAT} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    # A stream that fails is returned as its exception, so one refusal does not hide the rest.
    return await asyncio.gather(
        *(one_stream(envoy.port, request) for _ in range(streams)), return_exceptions=True
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / 100


def measure(streams: int, ttft: int, itl: int, tokens: int, workers: int) -> dict:
    """Runs `streams` paced streams against a fresh Envoy; returns their errors (ms) and CPU use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, streams * 2 + 256)), hard))
    config = {"mock": {"latency": {"time_to_first_token_ms": ttft, "inter_token_ms": itl}}}
    with tempfile.TemporaryDirectory() as workdir:
        path = render_config(MOCK_CONFIG, Path(workdir) / "envoy.yaml", json.dumps(config))
        envoy = Envoy(path, Path(workdir), concurrency=workers)
        try:
            cpu_before = cpu_seconds(envoy.process.pid)
            wall = time.perf_counter()
            results = asyncio.run(run(envoy, streams, tokens))
            wall = time.perf_counter() - wall
            cpu = cpu_seconds(envoy.process.pid) - cpu_before
        finally:
            envoy.stop()
    failed = [result for result in results if isinstance(result, BaseException)]
    results = [result for result in results if not isinstance(result, BaseException)]
    gaps = [gap for _, stream_gaps in results for gap in stream_gaps]
    return {
        "failed": len(failed),
        "failure": repr(failed[0]) if failed else "",
        "ttft_errors": [abs(first - ttft) for first, _ in results],
        "gap_errors": [abs(gap - itl) for gap in gaps],
        "mean_gap": statistics.fmean(gaps) if gaps else float("nan"),
        "cpu_share": cpu / wall,
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
    print(f"Envoy CPU: {100 * result['cpu_share']:.0f}% of one core")
    if result["failed"]:
        print(f"{result['failed']} streams failed, the first with {result['failure']}")


if __name__ == "__main__":
    main()
