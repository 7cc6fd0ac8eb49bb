"""Tool calls and structured output with the official SDK: an agent loop that ends, streamed
tool-call deltas the SDK accumulates, and content that validates against the requested schema."""

from __future__ import annotations

import json

import jsonschema
import openai
import pydantic
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}


@pytest.fixture()
def sdk(mock_envoy):
    with openai.OpenAI(base_url=mock_envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_an_agent_loop_calls_the_tool_then_answers(sdk):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER, TIME])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    second = sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER, TIME])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None


def test_parallel_calls_stream_as_deltas_the_sdk_accumulates(sdk):
    with sdk.chat.completions.stream(
        model="gpt-4o",
        messages=[{"role": "user", "content": "get weather and get time"}],
        tools=[WEATHER, TIME],
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])
    assert json.loads(calls[1].function.arguments)["zone"]
    assert final.choices[0].finish_reason == "tool_calls"


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]


def test_structured_output_parses_into_the_callers_model(sdk):
    # parse() sends a strict json_schema from the pydantic model and validates the reply with it.
    completion = sdk.chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "a person"}], response_format=Person
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)


def test_json_object_mode(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content) == {"response": "hi"}


def test_unknown_tool_choice_is_openais_400(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "q"}], tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert raised.value.param == "tool_choice"
