"""Hostile and extreme input through the real Envoy: each answered as OpenAI would (or served
whole), and each followed by a good request that must succeed (in `roomy`, after the test). The
ordinary bad bodies (empty, truncated, invalid UTF-8, wrong types, over the limit, chunked, wrong
method) are in mock/test_chat.py.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from calls import CHAT, HELLO, assert_openai_error, assert_serves

# Large enough for the 10 MB prompt and the 100,000 messages below.
BIG_LIMIT = 16 << 20


@pytest.fixture(scope="module")
def roomy_envoy(start_envoy):
    config = {
        "max_request_body_bytes": BIG_LIMIT,
        "mock": {"content": {"mode": "fixed", "text": "Read it all."}},
        # A user regex that backtracking engines take exponential time over (ReDoS).
        "guard": {"custom": [{"name": "nested", "regex": "(a+)+$", "action": "monitor"}]},
    }
    return start_envoy(filter_config=json.dumps(config))


@pytest.fixture()
def roomy(roomy_envoy):
    with httpx.Client(base_url=roomy_envoy.base_url, timeout=60) as http:
        yield http
        reply = http.post(CHAT, json=HELLO)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "Read it all."
    assert roomy_envoy.alive(), f"Envoy died:\n{roomy_envoy.log()}"


def test_100000_deep_nesting_is_refused_not_recursed(client):
    depth = 100_000
    body = b'{"model": "m", "messages": [{"role": "user", "content": "q"}], "extra": ' + b"[" * depth + b"]" * depth + b"}"
    error = assert_openai_error(client.post(CHAT, content=body), 400)
    assert "recursion limit" in error["message"]
    assert_serves(client)


def test_a_10_mb_prompt_is_read_and_counted_whole(roomy):
    text = "word " * (2 << 20)  # 10 MiB, about two million tokens
    reply = roomy.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
    assert reply.status_code == 200, reply.text[:500]
    assert reply.json()["usage"]["prompt_tokens"] > 2_000_000


def test_100000_messages_are_answered(roomy):
    messages = [{"role": "user", "content": "hi"}] * 100_000
    reply = roomy.post(CHAT, json={"model": "gpt-4o", "messages": messages})
    assert reply.status_code == 200, reply.text[:500]
    # Each message is three tokens of framing, "user" and "hi"; three more prime the reply.
    assert reply.json()["usage"]["prompt_tokens"] == 100_000 * 5 + 3


def test_a_pathological_user_regex_runs_in_linear_time(roomy):
    """`(a+)+$` against a long run of `a` and one `!` is the textbook catastrophic case; the regex
    engine here is linear, so the request is answered instead of hanging (the client would time
    out and fail this test)."""
    attack = "a" * 100_000 + "!"
    reply = roomy.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": attack}]})
    assert reply.status_code == 200, reply.text[:500]


def test_a_client_that_trickles_its_body_is_answered(mock_envoy):
    body = json.dumps(HELLO).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", mock_envoy.port), timeout=30) as conn:
        conn.sendall(head)
        for i in range(0, len(body), 8):
            conn.sendall(body[i : i + 8])
            time.sleep(0.02)  # the slowness is the behaviour under test
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", reply[:300]
    reply_body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert reply_body["choices"][0]["message"]["content"] == "Hello, edge!"


def test_bad_input_over_http2_gets_the_same_answer_and_the_connection_goes_on(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url, http1=False, http2=True, timeout=30) as h2:
        bad = h2.post(CHAT, content=b"{", headers={"content-type": "application/json"})
        assert bad.http_version == "HTTP/2"
        assert_openai_error(bad, 400)
        good = h2.post(CHAT, json=HELLO)
        assert good.status_code == 200
        assert good.json()["choices"][0]["message"]["content"] == "Hello, edge!"


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_unusual_methods_on_our_paths_are_405(client, method):
    reply = client.request(method, CHAT)
    assert_openai_error(reply, 405)
    assert_serves(client)
