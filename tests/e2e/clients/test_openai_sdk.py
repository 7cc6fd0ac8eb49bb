"""The official `openai` Python SDK, our reference client, against llm-edge in Envoy."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Say hi to the SDK."},
]


@pytest.fixture()
def sdk(mock_envoy):
    with openai.OpenAI(base_url=mock_envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client
    assert mock_envoy.alive()


def test_create_returns_a_typed_completion(sdk):
    completion = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Say hi to the SDK."
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_raw_response_parses_strictly(sdk):
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.status_code == 200
    # model_validate (unlike the SDK's lenient construct) rejects any field of the wrong type.
    openai.types.chat.ChatCompletion.model_validate(raw.http_response.json(), strict=True)


def test_stream_with_usage(sdk):
    stream = sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Say hi to the SDK."
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert {chunk.id for chunk in chunks} == {chunks[0].id}


def test_extra_body_httpbun_override(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_body={"httpbun": {"content": "From extra_body."}}
    )
    assert completion.choices[0].message.content == "From extra_body."


def test_errors_raise_the_sdk_exception_with_param(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="gpt-4o", messages=[])
    assert raised.value.status_code == 400
    assert raised.value.param == "messages"
    assert raised.value.code == "empty_array"
    assert raised.value.type == "invalid_request_error"
    # And the next request is served.
    assert sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices


def test_too_large_maps_to_a_413_error(sdk):
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x" * (2 << 20)}]
        )
    assert raised.value.status_code == 413
    assert raised.value.code == "request_too_large"


async def _async_roundtrip(base_url: str) -> str:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return completion.choices[0].message.content


def test_async_client(mock_envoy):
    assert asyncio.run(_async_roundtrip(mock_envoy.base_url + "/v1")) == "Say hi to the SDK."


def test_max_tokens_one_gives_length_and_one_token(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_completion_tokens=1
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Say"
    assert completion.usage.completion_tokens == 1


def test_stop_sequence_truncates_streamed_and_not(sdk):
    completion = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stop=[" to"])
    assert completion.choices[0].message.content == "Say hi"
    assert completion.choices[0].finish_reason == "stop"
    stream = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stop=" to", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Say hi"


def test_n_choices(sdk):
    completion = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert {choice.message.content for choice in completion.choices} == {"Say hi to the SDK."}


def test_usage_is_exact_for_the_model_family(sdk):
    # o200k_base: "Say hi to the SDK." is 6 tokens; prompt = 3 + 2 * 3 + "system" 1 +
    # "You are a test." 5 + "user" 1 + 6 = 22.
    completion = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (22, 6)


@pytest.fixture(scope="module")
def scripted_sdk(start_envoy):
    config = {
        "mock": {
            "rules": [
                {"when": {"user_message_regex": "(?i)weather"}, "reply": "Sunny, 21 degrees."},
                {"when": {"header": {"name": "x-tenant", "value": "acme"}}, "reply": "Hi Acme."},
            ],
            "content": {"mode": "lorem", "min_tokens": 10, "max_tokens": 30},
        }
    }
    envoy = start_envoy(filter_config=json.dumps(config))
    with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_rules_answer_by_message_and_by_header(scripted_sdk):
    weather = [{"role": "user", "content": "How is the weather?"}]
    reply = scripted_sdk.chat.completions.create(model="gpt-4o", messages=weather)
    assert reply.choices[0].message.content == "Sunny, 21 degrees."
    reply = scripted_sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Tenant": "acme"}
    )
    assert reply.choices[0].message.content == "Hi Acme."


def test_lorem_follows_max_tokens_and_seed(scripted_sdk):
    def ask():
        return scripted_sdk.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=25, seed=42
        )

    first, second = ask(), ask()
    assert first.usage.completion_tokens == 25
    assert first.choices[0].finish_reason == "length"
    assert first.choices[0].message.content == second.choices[0].message.content


LOOKUP = {"type": "function", "function": {"name": "look_up", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
SUMMARIZE = {"type": "function", "function": {"name": "summarize", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}


def test_required_tool_choice_binds_after_a_tool_result(sdk):
    messages = [{"role": "user", "content": "Look it up."}]
    first = sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[LOOKUP, SUMMARIZE], tool_choice="required"
    )
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "look_up"
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    # Required after a tool's result: the first tool not called yet, not text.
    second = sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[LOOKUP, SUMMARIZE], tool_choice="required"
    )
    assert second.choices[0].finish_reason == "tool_calls"
    (call,) = second.choices[0].message.tool_calls
    assert call.function.name == "summarize"
    assert isinstance(json.loads(call.function.arguments)["text"], str)
    named = sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[LOOKUP, SUMMARIZE],
        tool_choice={"type": "function", "function": {"name": "look_up"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["look_up"]
    # Auto answers the result in words, so a plain loop ends.
    auto = sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=[LOOKUP, SUMMARIZE])
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].finish_reason == "stop"


def test_responses_required_tool_choice_calls_the_final_tool_after_a_tool_result(sdk):
    tools = [
        {"type": "function", "name": "look_up", "parameters": LOOKUP["function"]["parameters"]},
        {"type": "function", "name": "final_answer", "parameters": {
            "type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}},
    ]
    first = sdk.responses.create(model="gpt-4o", input="Look it up.", tools=tools, tool_choice="required")
    (call,) = first.output
    assert (call.type, call.name) == ("function_call", "look_up")
    history = [
        {"role": "user", "content": "Look it up."},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
    ]
    with sdk.responses.stream(model="gpt-4o", input=history, tools=tools, tool_choice="required") as stream:
        final = stream.get_final_response()
    (call,) = final.output
    assert (call.type, call.name) == ("function_call", "final_answer")
    assert isinstance(json.loads(call.arguments)["answer"], int)
