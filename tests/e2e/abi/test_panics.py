"""Panic containment in real Envoy: a panic in any hook fails that one request closed, is logged
through Envoy's logger, and Envoy keeps serving. The tests share one Envoy, so each reads only the
log written after its own request began.

Uses the test-only build (cargo feature fault-injection), where the request header
`x-llm-edge-test-panic: <hook>` makes that hook panic.
"""

from __future__ import annotations

import httpx
import pytest

from calls import CHAT
from harness import BEFORE_1_38, FAULT_MODULE_DIR, NULL_STREAM_HOOKS

HELLO = {"model": "m", "messages": [{"role": "user", "content": "still here?"}]}
TRIGGER = "x-llm-edge-test-panic"


@pytest.fixture(scope="module")
def fault_envoy(start_envoy):
    if not (FAULT_MODULE_DIR / "libllm_edge.so").exists():
        pytest.fail(f"{FAULT_MODULE_DIR}/libllm_edge.so is missing: `make test` builds it")
    return start_envoy(module_dir=FAULT_MODULE_DIR)


@pytest.fixture()
def http(fault_envoy):
    with httpx.Client(base_url=fault_envoy.base_url, timeout=10) as client:
        yield client
    assert fault_envoy.alive(), fault_envoy.log()
    after = client_after(fault_envoy)
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "still here?"


def client_after(envoy):
    with httpx.Client(base_url=envoy.base_url, timeout=10) as fresh:
        return fresh.post(CHAT, json=HELLO)


@pytest.mark.parametrize("hook", ["request_headers", "request_body"])
def test_request_path_panic_answers_an_openai_500(http, fault_envoy, hook):
    since = fault_envoy.log_size()
    assert_openai_500(http.post(CHAT, json=HELLO, headers={TRIGGER: hook}))
    log = fault_envoy.log(since)
    # Where it panicked, never its message: a message can quote the request's text.
    assert "llm_edge: panic at src/" in log and f"injected panic in {hook}" not in log
    assert f"llm_edge: panic in {hook}; failing the request closed" in log


def assert_openai_500(reply: httpx.Response) -> None:
    assert reply.status_code == 500
    assert reply.json() == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.parametrize("hook", ["response_headers", "response_body"])
def test_response_path_panic_resets_the_stream(http, fault_envoy, hook):
    # llm-edge's 404 for an unknown URL flows back through the response hooks.
    since = fault_envoy.log_size()
    if BEFORE_1_38 and hook == "response_headers":
        # 1.37 has no reset callback; llm-edge's local reply stands in, which Envoy turns into a
        # reset only once headers went downstream. Here they had not: the client gets a 500.
        assert_openai_500(http.get("/v1/files", headers={TRIGGER: hook}))
    else:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/v1/files", headers={TRIGGER: hook})
    assert f"llm_edge: panic in {hook}; resetting the stream" in fault_envoy.log(since)


def test_a_panic_after_the_reply_is_logged_and_envoy_serves_on(http, fault_envoy):
    since = fault_envoy.log_size()
    reply = http.post(CHAT, json=HELLO, headers={TRIGGER: "stream_complete"})
    assert reply.status_code == 200
    fault_envoy.wait_for_log("llm_edge: panic in stream_complete", since=since)
    assert http.post(CHAT, json=HELLO).status_code == 200


def test_a_failed_filter_new_fails_requests_closed(start_envoy):
    """When filter_new fails (here a panic, contained), 1.40 answers 500 itself; 1.37 to 1.39 run
    every hook with a null stream instead, and llm-edge answers OpenAI's 500 rather than let the
    request pass unfiltered."""
    envoy = start_envoy(
        module_dir=FAULT_MODULE_DIR, extra_env={"LLM_EDGE_TEST_PANIC_IN_FILTER_NEW": "1"}
    )
    with httpx.Client(base_url=envoy.base_url, timeout=10) as client:
        for _ in range(3):
            reply = client.post(CHAT, json=HELLO)
            if NULL_STREAM_HOOKS:
                assert_openai_500(reply)
            else:
                assert (reply.status_code, reply.content) == (500, b"")
    assert "llm_edge: panic at src/" in envoy.log()
    assert "injected panic in filter_new" not in envoy.log()
    assert envoy.alive()


def test_panic_output_goes_to_envoys_log_not_stderr(fault_envoy, http):
    since = fault_envoy.log_size()
    http.post(CHAT, json=HELLO, headers={TRIGGER: "request_headers"})
    # Rust's default hook would print "thread '…' panicked at"; ours logs through Envoy instead.
    assert "llm_edge: panic in request_headers" in fault_envoy.log(since)
    assert "thread '" not in fault_envoy.log()
