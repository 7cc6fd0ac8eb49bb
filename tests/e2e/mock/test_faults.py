"""Faults on request, through the real Envoy: OpenAI errors the SDK recognises, configured rates,
and streams that break in each of the ways a real upstream can."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from calls import CHAT, FAULT_EXCEPTIONS

MESSAGES = [{"role": "user", "content": "one two three four five"}]
STREAM = {"model": "gpt-4o", "stream": True, "messages": MESSAGES}


@pytest.fixture()
def sdk(mock_envoy):
    with openai.OpenAI(base_url=mock_envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_rate_limit_scenario_raises_the_sdks_rate_limit_error(sdk):
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Test-Scenario": "rate-limit"}
        )
    error = raised.value
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_error_scenario_is_a_500(sdk):
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Test-Scenario": "error"}
        )
    assert raised.value.status_code == 500


@pytest.mark.parametrize(("status", "exception", "code"), FAULT_EXCEPTIONS)
def test_any_fault_status_maps_to_the_sdk_exception(sdk, status, exception, code):
    with pytest.raises(exception) as raised:
        sdk.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-llm-edge-fault": str(status)}
        )
    assert raised.value.status_code == status
    assert raised.value.code == code


def test_configured_rates_are_drawn_from_a_seeded_sequence(start_envoy):
    config = {"mock": {"faults": {"rates": {"429": 0.5}, "seed": 7}}}

    def statuses() -> list[int]:
        envoy = start_envoy(filter_config=json.dumps(config))
        with httpx.Client(base_url=envoy.base_url) as http:
            return [
                http.post(CHAT, json={"model": "m", "messages": MESSAGES}).status_code
                for _ in range(40)
            ]

    first = statuses()
    assert set(first) == {200, 429}
    assert statuses() == first


def stream_lines(http: httpx.Client, fault: str) -> list[str]:
    with http.stream("POST", CHAT, json=STREAM, headers={"x-llm-edge-stream-fault": fault}) as reply:
        assert reply.status_code == 200
        return [line for line in reply.iter_lines() if line]


def test_truncate_ends_the_stream_without_done(client):
    lines = stream_lines(client, "truncate:2")
    assert lines and "data: [DONE]" not in lines
    assert all(json.loads(line.removeprefix("data: ")) for line in lines)


def test_reset_cuts_the_connection(client):
    with pytest.raises(httpx.RemoteProtocolError):
        stream_lines(client, "reset:2")


def test_malformed_event_breaks_the_sdk_parser(sdk):
    stream = sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True,
        extra_headers={"x-llm-edge-stream-fault": "malformed:1"},
    )
    with pytest.raises(json.JSONDecodeError):
        list(stream)


def test_stall_keeps_the_stream_open_until_the_client_gives_up(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url, timeout=httpx.Timeout(30, read=0.5)) as http:
        with pytest.raises(httpx.ReadTimeout):
            stream_lines(http, "stall:1")
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        assert http.post(CHAT, json={"model": "m", "messages": MESSAGES}).status_code == 200


def test_context_length_exceeded_is_openais_error(start_envoy):
    envoy = start_envoy(filter_config=json.dumps({"mock": {"context_windows": {"*": 50}}}))
    with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "word " * 100}]
            )
        assert raised.value.code == "context_length_exceeded"
        assert raised.value.param == "messages"
        assert "maximum context length is 50 tokens" in raised.value.message
        assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
