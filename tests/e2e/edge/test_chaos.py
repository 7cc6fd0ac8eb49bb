"""Chaos on real traffic (`mock.faults.upstream`), through the real Envoy: a pass-through edge in
front of a recording upstream, or of llm-edge's own mock in a second Envoy (streaming as a model
does, an event at a time), with the official SDKs as clients. Each fault surfaces in the SDK as
it does from the mock (tests/e2e/mock/test_faults.py); a status fault never reaches the upstream;
without `upstream: true` the fault headers are the upstream's business."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from calls import CHAT, FAULT_EXCEPTIONS
from harness import ENVOY_DIR, MODULE_STATS
from upstream import Upstream, tagged

PASSTHROUGH = ENVOY_DIR / "passthrough.yaml"
CHAOS = {"mode": "passthrough", "mock": {"faults": {"upstream": True}}}
MESSAGES = [{"role": "user", "content": "one two three four five"}]
# The provider is llm-edge's mock: this header, which the edge passes on, paces its stream so
# each event leaves it on its own.
PACED = {"x-llm-edge-itl-ms": "20"}


@pytest.fixture(scope="module")
def recorder():
    upstream = Upstream("recorder")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def provider(start_envoy):
    """llm-edge's mock, echoing the prompt, as the model behind the edge."""
    return start_envoy(filter_config=json.dumps({"mock": {"content": {"mode": "echo"}}}))


def edge(start_envoy, port: int, config: dict = CHAOS):
    return start_envoy(PASSTHROUGH, filter_config=json.dumps(config),
                       cluster_ports={"openai_compatible": port, "small_models": port})


@pytest.fixture(scope="module")
def recorded_edge(start_envoy, recorder):
    return edge(start_envoy, recorder.port)


@pytest.fixture(scope="module")
def chaos_edge(start_envoy, provider):
    return edge(start_envoy, provider.port)


def sdk(envoy) -> openai.OpenAI:
    return openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="unused", max_retries=0)


def counter(envoy, name: str) -> int:
    """A counter of the module's, 0 before its first update (the module's Envoys are shared)."""
    try:
        return envoy.stat(f"{MODULE_STATS}.{name}")
    except KeyError:
        return 0


@pytest.mark.parametrize(("status", "exception", "code"), FAULT_EXCEPTIONS)
def test_a_status_fault_is_the_sdks_exception_and_never_reaches_the_upstream(
    recorded_edge, recorder, status, exception, code
):
    test_id, tag = tagged()
    faults = counter(recorded_edge, f"faults_total.type.{status}")
    with sdk(recorded_edge) as client, pytest.raises(exception) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-llm-edge-fault": str(status), **tag}
        )
    assert raised.value.status_code == status
    assert raised.value.code == code
    assert test_id not in recorder.requests
    recorded_edge.wait_for_stat(f"{MODULE_STATS}.faults_total.type.{status}", faults + 1)


def test_the_rate_limit_scenario_carries_openais_headers(recorded_edge, recorder):
    test_id, tag = tagged()
    outcome = "requests_total.endpoint.chat_completions.outcome.fault"
    faulted = counter(recorded_edge, outcome)
    with sdk(recorded_edge) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Test-Scenario": "rate-limit", **tag}
        )
    headers = raised.value.response.headers
    assert headers["retry-after"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    assert test_id not in recorder.requests
    recorded_edge.wait_for_stat(f"{MODULE_STATS}.{outcome}", faulted + 1)


def test_an_anthropic_client_gets_anthropics_error(recorded_edge, recorder):
    test_id, tag = tagged()
    with anthropic.Anthropic(base_url=recorded_edge.base_url, api_key="unused", max_retries=0) as claude:
        with pytest.raises(anthropic.RateLimitError) as raised:
            claude.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES,
                                   extra_headers={"x-llm-edge-fault": "429", **tag})
    body = raised.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert raised.value.response.headers["retry-after"] == "1"
    assert test_id not in recorder.requests


def test_a_stream_fault_goes_no_further_than_the_edge(recorded_edge, recorder):
    test_id, tag = tagged()
    with sdk(recorded_edge) as client:
        chunks = list(client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True,
            extra_headers={"x-llm-edge-stream-fault": "truncate:2", **tag},
        ))
    # The recorder splits its events across 37-byte pieces: the count is still exact.
    assert len(chunks) == 2
    assert "".join(c.choices[0].delta.content for c in chunks) == "Hello from"
    assert "x-llm-edge-stream-fault" not in recorder.seen(test_id)["headers"]


def test_truncate_ends_the_real_stream_after_n_events(chaos_edge):
    truncated = counter(chaos_edge, "faults_total.type.truncate")
    with sdk(chaos_edge) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True,
            extra_headers={"x-llm-edge-stream-fault": "truncate:3", **PACED},
        )
        chunks = list(stream)
    assert len(chunks) == 3 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert not any(c.choices[0].finish_reason for c in chunks), "the stream ended early"
    chaos_edge.wait_for_stat(f"{MODULE_STATS}.faults_total.type.truncate", truncated + 1)


def stream_lines(envoy, fault: str, timeout: httpx.Timeout | float = 30) -> list[str]:
    lines: list[str] = []
    body = {"model": "gpt-4o", "stream": True, "messages": MESSAGES}
    with httpx.Client(base_url=envoy.base_url, timeout=timeout) as http:
        with http.stream("POST", CHAT, json=body,
                         headers={"x-llm-edge-stream-fault": fault, **PACED}) as reply:
            assert reply.status_code == 200
            for line in reply.iter_lines():
                if line:
                    lines.append(line)
    return lines


def test_reset_cuts_the_real_stream_after_n_events(chaos_edge):
    with pytest.raises(httpx.RemoteProtocolError):
        stream_lines(chaos_edge, "reset:2")
    with sdk(chaos_edge) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True,
            extra_headers={"x-llm-edge-stream-fault": "reset:2", **PACED},
        )
        received = []
        # The SDK reports the cut as a connection error, after the events that came before it.
        with pytest.raises(openai.APIConnectionError):
            for chunk in stream:
                received.append(chunk)
    assert len(received) == 2


def test_a_malformed_event_breaks_the_sdks_parser(chaos_edge):
    with sdk(chaos_edge) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True,
            extra_headers={"x-llm-edge-stream-fault": "malformed:1", **PACED},
        )
        with pytest.raises(json.JSONDecodeError):
            list(stream)


def test_stall_keeps_the_real_stream_open_until_the_client_gives_up(chaos_edge):
    with pytest.raises(httpx.ReadTimeout):
        stream_lines(chaos_edge, "stall:1", httpx.Timeout(30, read=0.5))
    with sdk(chaos_edge) as client:
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == MESSAGES[0]["content"]


def test_a_whole_reply_ignores_stream_faults(chaos_edge):
    with sdk(chaos_edge) as client:
        reply = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-llm-edge-stream-fault": "reset:0"}
        )
    assert reply.choices[0].message.content == MESSAGES[0]["content"]


def test_a_translated_stream_breaks_on_the_clients_events(start_envoy, provider):
    config = {**CHAOS, "translate": [{"client": "chat", "upstream": "messages",
                                      "upstream_path": "/v1/messages", "models": ["claude-*"]}]}
    translated = edge(start_envoy, provider.port, config)
    with sdk(translated) as client:
        chunks = list(client.chat.completions.create(
            model="claude-x", messages=MESSAGES, stream=True,
            extra_headers={"x-llm-edge-stream-fault": "truncate:3", **PACED},
        ))
    assert len(chunks) == 3 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("one")


def test_without_upstream_the_headers_are_the_upstreams(start_envoy, recorder):
    plain = edge(start_envoy, recorder.port, {"mode": "passthrough"})
    test_id, tag = tagged()
    with sdk(plain) as client:
        reply = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-llm-edge-fault": "500", **tag}
        )
        chunks = list(client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True,
            extra_headers={"x-llm-edge-stream-fault": "reset:1"},
        ))
    assert reply.choices[0].message.content == "Hello from the upstream."
    assert recorder.seen(test_id)["headers"]["x-llm-edge-fault"] == "500"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the upstream."
