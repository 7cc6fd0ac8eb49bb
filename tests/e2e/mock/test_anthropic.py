"""Anthropic's Messages API with the official `anthropic` SDK: text, streaming, tool use and
errors in Anthropic's own envelope."""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

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


SEARCH = {"name": "search", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
FETCH = {"name": "fetch", "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}}


def after_a_search(claude):
    messages = [{"role": "user", "content": "Find it."}]
    first = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=200, tools=[SEARCH, FETCH], tool_choice={"type": "any"},
        messages=messages,
    )
    (block,) = first.content
    assert block.name == "search"
    return messages + [
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "found"}]},
    ]


def test_any_and_tool_choices_bind_after_a_tool_result(claude):
    messages = after_a_search(claude)
    # any: the first tool not called yet; tool: that one; auto: words.
    forced = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=200, tools=[SEARCH, FETCH], tool_choice={"type": "any"},
        messages=messages,
    )
    assert forced.stop_reason == "tool_use"
    assert [b.name for b in forced.content] == ["fetch"]
    jsonschema.validate(forced.content[0].input, FETCH["input_schema"])
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=200, tools=[SEARCH, FETCH],
        tool_choice={"type": "tool", "name": "search"}, messages=messages,
    ) as stream:
        named = stream.get_final_message()
    assert named.stop_reason == "tool_use" and [b.name for b in named.content] == ["search"]
    words = claude.messages.create(model="claude-sonnet-4-6", max_tokens=200, tools=[SEARCH, FETCH], messages=messages)
    assert words.stop_reason == "end_turn" and words.content[0].type == "text"


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=120)
    tags: list[str]


def test_messages_parse_gets_a_schema_valid_object(claude):
    parsed = claude.messages.parse(
        model="claude-sonnet-4-6", max_tokens=1000, output_format=Person,
        messages=[{"role": "user", "content": "Who is it?"}],
    )
    assert parsed.stop_reason == "end_turn"
    assert isinstance(parsed.parsed_output, Person)
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=1000, output_format=Person,
        messages=[{"role": "user", "content": "Who is it?"}],
    ) as stream:
        assert isinstance(stream.get_final_message().parsed_output, Person)


def test_output_config_and_the_beta_output_format_give_json_text(claude, client):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=1000, messages=[{"role": "user", "content": "a number"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    jsonschema.validate(json.loads(message.content[0].text), schema)
    beta = client.post(
        "/v1/messages", headers={"anthropic-beta": "structured-outputs-2025-11-13"},
        json={"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "a number"}],
              "output_format": {"type": "json_schema", "schema": schema}},
    )
    assert beta.status_code == 200
    jsonschema.validate(json.loads(beta.json()["content"][0]["text"]), schema)


def test_stop_sequences_cut_the_reply_and_are_named(claude):
    ask = {"model": "claude-sonnet-4-6", "max_tokens": 100, "stop_sequences": ["STOP", "never"],
           "messages": [{"role": "user", "content": "go on STOP and no further"}]}
    message = claude.messages.create(**ask)
    assert message.content[0].text == "go on "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")
    with claude.messages.stream(**ask) as stream:
        events = list(stream)
        final = stream.get_final_message()
    (delta,) = [e for e in events if e.type == "message_delta"]
    assert (delta.delta.stop_reason, delta.delta.stop_sequence) == ("stop_sequence", "STOP")
    assert (final.stop_reason, final.stop_sequence, final.content[0].text) == ("stop_sequence", "STOP", "go on ")
    unmatched = claude.messages.create(**{**ask, "stop_sequences": ["never"]})
    assert (unmatched.stop_reason, unmatched.stop_sequence) == ("end_turn", None)


USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("body, message", [
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages: at least one message is required"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]},
     "messages.0.content: Input should be a valid list"),
    ({"model": "m", "messages": USER}, "max_tokens: Field required"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
     'not "system" as an input message role.'),
])
def test_validation_errors_are_anthropics(claude, body, message):
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.post("/v1/messages", cast_to=httpx.Response, body=body)
    assert raised.value.status_code == 400
    assert raised.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def assert_anthropics(reply: httpx.Response, status: int, kind: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert body["error"]["type"] == kind
    assert "openai" not in reply.text.lower()
    return body["error"]["message"]


def test_no_error_on_the_messages_endpoint_speaks_of_openai(client):
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": USER}
    broken = client.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert assert_anthropics(broken, 400, "invalid_request_error").startswith("The request body is not valid JSON: ")
    too_large = client.post("/v1/messages", json={**body, "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert assert_anthropics(too_large, 413, "request_too_large") == "Request exceeds the maximum size"
    assert assert_anthropics(client.get("/v1/messages"), 405, "invalid_request_error") == "Method Not Allowed"
    counting = client.post("/v1/messages/count_tokens", json={"messages": USER})
    assert assert_anthropics(counting, 400, "invalid_request_error") == "model: Field required"
    for status, kind in [(400, "invalid_request_error"), (401, "authentication_error"),
                         (403, "permission_error"), (404, "not_found_error"), (429, "rate_limit_error"),
                         (500, "api_error"), (503, "overloaded_error")]:
        faulted = client.post("/v1/messages", json=body, headers={"x-llm-edge-fault": str(status)})
        message = assert_anthropics(faulted, status, kind)
        if status == 404:
            assert message == "model: claude-sonnet-4-6"
    for scenario, status in [("rate-limit", 429), ("error", 500)]:
        assert_anthropics(client.post("/v1/messages", json=body, headers={"x-test-scenario": scenario}), status,
                          {429: "rate_limit_error", 500: "api_error"}[status])


def test_a_prompt_over_the_window_is_anthropics_error(start_envoy):
    envoy = start_envoy(filter_config=json.dumps({"mock": {"context_windows": {"*": 50}}}))
    with anthropic.Anthropic(base_url=envoy.base_url, api_key="unused", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError) as raised:
            claude.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                   messages=[{"role": "user", "content": "word " * 100}])
        assert re.fullmatch(r"prompt is too long: \d+ tokens > 50 maximum", raised.value.body["error"]["message"])
        with pytest.raises(anthropic.BadRequestError) as raised:
            claude.messages.create(model="claude-sonnet-4-6", max_tokens=45, messages=USER)
        assert raised.value.body["error"]["message"].startswith(
            "input length and `max_tokens` exceed context limit: ")
