"""Clients that give up: hundreds, at once, mid-request, mid-pacing and mid-stream. Afterwards
Envoy has no stream left open, serves normally, keeps its thread count, and a second storm leaves
its memory where the first did."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from harness import proc_status
from test_chat import CHAT, HELLO

STORM = 300
PACED = {"mock": {"latency": {"time_to_first_token_ms": 50, "inter_token_ms": 10}}}


@pytest.fixture(scope="module")
def paced_envoy(start_envoy):
    return start_envoy(filter_config=json.dumps(PACED), concurrency=2)


def request_bytes(body: dict) -> tuple[bytes, bytes]:
    payload = json.dumps(body).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head, payload


def give_up(port: int, kind: int) -> None:
    """One client that disconnects: before its body is whole, while its paced reply waits for
    the first token, or after the first token of a stream."""
    streamed = {**HELLO, "stream": True, "messages": [{"role": "user", "content": "word " * 50}]}
    head, payload = request_bytes(streamed if kind else HELLO)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        if kind == 0:
            conn.sendall(head + payload[: len(payload) // 2])
        elif kind == 1:
            conn.sendall(head + payload)
        else:
            conn.sendall(head + payload)
            while b'"content":"word' not in conn.recv(65536):
                pass
        # A reset, not a polite close: the harshest way to leave.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def storm(port: int) -> None:
    threads = [threading.Thread(target=give_up, args=(port, i % 3)) for i in range(STORM)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def settle(envoy) -> None:
    """Every abandoned stream is gone, and a good request is answered."""
    envoy.wait_for_stat("http.llm_edge.downstream_rq_active", 0)
    envoy.wait_for_stat("http.llm_edge.downstream_cx_active", 0)
    reply = httpx.post(f"{envoy.base_url}{CHAT}", json=HELLO, timeout=30)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "Hello, edge!"


def test_storms_of_clients_giving_up_leave_envoy_as_it_was(paced_envoy):
    pid = paced_envoy.process.pid
    settle(paced_envoy)
    threads_before = proc_status(pid, "Threads")

    storm(paced_envoy.port)
    settle(paced_envoy)
    rss_after_first = proc_status(pid, "VmRSS")

    storm(paced_envoy.port)
    settle(paced_envoy)
    rss_after_second = proc_status(pid, "VmRSS")

    assert paced_envoy.alive()
    assert proc_status(pid, "Threads") == threads_before
    # The first storm may grow pools and caches to their working size; the second must not add.
    assert rss_after_second - rss_after_first < 8 * 1024, (rss_after_first, rss_after_second)
    assert "Caught" not in paced_envoy.log()
