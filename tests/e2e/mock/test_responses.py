"""The Responses API with the official SDK: text, instructions, streamed typed events, function
calls and their outputs."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture()
def sdk(mock_envoy):
    with openai.OpenAI(base_url=mock_envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_create_returns_output_text_and_usage(sdk):
    response = sdk.responses.create(model="gpt-4o", input="Tell me a joke", instructions="Be brief")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Tell me a joke"
    assert response.instructions == "Be brief"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_max_output_tokens_gives_an_incomplete_response(sdk):
    response = sdk.responses.create(model="gpt-4o", input="one two three four", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two"


def test_stream_sends_the_typed_event_sequence(sdk):
    with sdk.responses.stream(model="gpt-4o", input="stream me please") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds.count("response.output_text.delta") == 3
    assert kinds[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "stream me please"


def test_function_calls_then_their_output_gets_text(sdk):
    first = sdk.responses.create(model="gpt-4o", input="weather in Oslo?", tools=[TOOL])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), TOOL["parameters"])

    second = sdk.responses.create(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "weather in Oslo?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 3}'},
        ],
        tools=[TOOL],
    )
    assert second.output[0].type == "message"
    assert second.status == "completed"


def test_streamed_function_call_arguments_accumulate(sdk):
    with sdk.responses.stream(model="gpt-4o", input="weather?", tools=[TOOL]) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    jsonschema.validate(json.loads(call.arguments), TOOL["parameters"])


def test_bad_input_is_an_openai_400(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="gpt-4o", input=[{"role": "robot", "content": "x"}])
    assert raised.value.param == "input[0].role"
