"""Clients that give up: hundreds, at once, mid-request, mid-pacing and mid-stream, against the
mock and against the pass-through edge of envoy/lab.yaml (whose provider streams slowly).
Afterwards Envoy has no stream left open, serves normally, keeps its thread count, and a second
storm leaves its memory where the first did."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from calls import CHAT, HELLO
from harness import proc_status

STORM = 300
PACED = {"mock": {"latency": {"time_to_first_token_ms": 50, "inter_token_ms": 10}}}
# The lab's provider is llm-edge's mock: these headers, passed on by the edge, pace its replies.
# The lab's edge reserves a token budget per `x-tenant`: each storm client is its own tenant (the
# same ones in both storms), or 600 streamed requests a minute would exhaust one tenant's budget.
PACED_PROVIDER = {"x-llm-edge-ttft-ms": "50", "x-llm-edge-itl-ms": "10", "x-tenant": "acme"}


@pytest.fixture(scope="module")
def paced_envoy(start_envoy):
    return start_envoy(filter_config=json.dumps(PACED), concurrency=2)


@pytest.fixture(scope="module")
def lab_envoy(start_lab):
    return start_lab(concurrency=2)


def request_bytes(body: dict, headers: dict[str, str]) -> tuple[bytes, bytes]:
    payload = json.dumps(body).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head, payload


def give_up(port: int, kind: int, headers: dict[str, str]) -> None:
    """One client that disconnects: before its body is whole, while its paced reply waits for
    the first token, or after the first token of a stream."""
    streamed = {**HELLO, "stream": True, "messages": [{"role": "user", "content": "word " * 50}]}
    head, payload = request_bytes(streamed if kind else HELLO, headers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        if kind == 0:
            conn.sendall(head + payload[: len(payload) // 2])
        elif kind == 1:
            conn.sendall(head + payload)
        else:
            conn.sendall(head + payload)
            received = b""
            # The first token may arrive split over reads; a closed connection or another
            # status ends the wait (the connection is kept alive: an error would leave it idle).
            while b'"content":"word' not in received:
                data = conn.recv(65536)
                assert data, f"the stream ended before its first token: {received!r}"
                received += data
                assert not received.startswith(b"HTTP/") or received.startswith(
                    b"HTTP/1.1 200 "
                ), f"the stream was refused: {received!r}"
        # A reset, not a polite close: the harshest way to leave.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def storm(port: int, headers: dict[str, str]) -> None:
    """STORM clients at once, each giving up its own way; any client that saw something wrong
    fails the test (an exception in a thread alone would only be a warning)."""
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            give_up(port, i % 3, {**headers, "x-tenant": f"storm-{i}"})
        except Exception as failure:  # noqa: BLE001 - reported below, whatever it is
            failures.append(failure)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(STORM)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"{len(failures)} clients failed, the first with {failures[0]!r}"


def settle(envoy, target: dict) -> None:
    """Every abandoned stream is gone, and a good request, paced like the storm's, is answered."""
    for stat in target["open"]:
        envoy.wait_for_stat(stat, 0)
    reply = httpx.post(f"{envoy.base_url}{CHAT}", json=HELLO, headers=target["headers"], timeout=30)
    assert reply.status_code == 200
    # The mock answers, or (pass-through) the provider echoes what reached it.
    assert reply.json()["choices"][0]["message"]["content"] == "Hello, edge!"


MOCK = {
    "envoy": "paced_envoy",
    "headers": {},
    "open": ["http.llm_edge.downstream_rq_active", "http.llm_edge.downstream_cx_active"],
}
PASS_THROUGH = {
    "envoy": "lab_envoy",
    "headers": PACED_PROVIDER,
    "open": [
        *MOCK["open"],
        "http.mock_provider.downstream_rq_active",
        "cluster.provider.upstream_rq_active",
    ],
}


@pytest.mark.parametrize("target", [MOCK, PASS_THROUGH], ids=["mock", "pass-through"])
def test_storms_of_clients_giving_up_leave_envoy_as_it_was(request, target):
    envoy = request.getfixturevalue(target["envoy"])
    pid = envoy.process.pid
    settle(envoy, target)
    threads_before = proc_status(pid, "Threads")

    storm(envoy.port, target["headers"])
    settle(envoy, target)
    rss_after_first = proc_status(pid, "VmRSS")

    storm(envoy.port, target["headers"])
    settle(envoy, target)
    rss_after_second = proc_status(pid, "VmRSS")

    assert envoy.alive()
    assert proc_status(pid, "Threads") == threads_before
    # The first storm may grow pools and caches to their working size; the second must not add.
    assert rss_after_second - rss_after_first < 8 * 1024, (rss_after_first, rss_after_second)
    assert "Caught" not in envoy.log()
