"""Anthropic's Messages API with the official `anthropic` SDK: text, streaming, tool use and
errors in Anthropic's own envelope."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


@pytest.fixture()
def claude(mock_envoy):
    with anthropic.Anthropic(base_url=mock_envoy.base_url, api_key="unused", max_retries=0) as client:
        yield client


def test_create_answers_a_message(claude):
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="Be brief",
        messages=[{"role": "user", "content": "Hello, Claude"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello, Claude"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_max_tokens_stops_the_reply(claude):
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=2, messages=[{"role": "user", "content": "one two three"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "one two"


def test_stream_yields_the_event_sequence(claude):
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100,
        messages=[{"role": "user", "content": "stream this reply"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "stream this reply"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"


def test_tool_use_then_tool_result_gets_text(claude):
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = claude.messages.create(model="claude-sonnet-4-6", max_tokens=200, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    (block,) = first.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, WEATHER["input_schema"])

    messages += [
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "3 degrees"}]},
    ]
    second = claude.messages.create(model="claude-sonnet-4-6", max_tokens=200, tools=[WEATHER], messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"


def test_streamed_tool_use_input_accumulates(claude):
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    jsonschema.validate(final.content[0].input, WEATHER["input_schema"])


def test_errors_come_in_anthropics_envelope(claude, mock_envoy):
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert raised.value.body["error"]["message"].startswith("max_tokens: ")
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        limited = http.post("/v1/messages", json=body, headers={"x-test-scenario": "rate-limit"})
    assert limited.status_code == 429
    assert json.loads(limited.text)["error"]["type"] == "rate_limit_error"
