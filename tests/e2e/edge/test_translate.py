"""Translation through the real Envoy, each direction with its official SDK as the client and, as
the upstream, llm-edge's own mock of the other API in a second Envoy (or a recording upstream,
for the exact bytes sent): text, a multi-turn tool loop, streamed tool arguments, stop sequences,
max tokens, errors in the client's dialect, and the guard and a budget on a translated route.

1. An OpenAI Chat Completions client (`openai`), an Anthropic Messages upstream.
2. An Anthropic Messages client (`anthropic`), an OpenAI Chat Completions upstream.
3. An OpenAI Responses client (`openai`), an OpenAI Chat Completions upstream (stateless)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import jsonschema
import openai
import pytest

from harness import ENVOY_DIR, MODULE_STATS
from upstream import Upstream, tagged

CONFIG = ENVOY_DIR / "translate.yaml"
TRANSLATE = [{"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
              "headers": {"anthropic-version": "2023-06-01"}, "default_max_tokens": 4096,
              "models": ["claude-*"]},
             {"client": "messages", "upstream": "chat", "upstream_path": "/v1/chat/completions"},
             {"client": "responses", "upstream": "chat", "upstream_path": "/v1/chat/completions"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
EMAIL = "ada@example.com"


@pytest.fixture(scope="module")
def anthropic_mock(start_envoy):
    """llm-edge's mock, answering /v1/messages in Anthropic's wire format (echo mode)."""
    return start_envoy(filter_config='{"mock": {"content": {"mode": "echo"}}}')


def start_proxy(start_envoy, upstream_port: int, **options):
    """The translating Envoy with both of its upstream clusters sent to `upstream_port`."""
    return start_envoy(CONFIG, cluster_ports={"anthropic": upstream_port,
                                              "openai_compatible": upstream_port}, **options)


@pytest.fixture(scope="module")
def proxy(start_envoy, anthropic_mock):
    return start_proxy(start_envoy, anthropic_mock.port)


@pytest.fixture()
def sdk(proxy):
    with openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="client-key", max_retries=0) as client:
        yield client


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_text_comes_back_as_a_chat_completion(sdk):
    reply = sdk.chat.completions.create(
        model="claude-latest", messages=[{"role": "system", "content": "Be brief."}, *user("Hello there")],
    )
    assert reply.object == "chat.completion"
    assert reply.model == "claude-sonnet-4-6", "aliases run before the translation"
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content == "Hello there"
    assert choice.finish_reason == "stop"
    usage = reply.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_the_upstream_receives_anthropics_request(start_envoy):
    recorder = Upstream("anthropic")
    try:
        envoy = start_proxy(start_envoy, recorder.port, extra_env={"ANTHROPIC_API_KEY": "sk-ant-from-envoy"})
        test_id, tag = tagged()
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="client-key", max_retries=0) as client:
            client.chat.completions.create(
                model="claude-latest", stop=["END"], temperature=0.2, seed=3, extra_headers=tag,
                messages=[{"role": "developer", "content": "Be brief."}, *user("hi")],
            )
        sent = recorder.seen(test_id)
        assert sent["path"] == "/v1/messages"
        assert sent["headers"]["anthropic-version"] == "2023-06-01"
        # The key is Envoy's to set; the client's own credential goes no further.
        assert sent["headers"]["x-api-key"] == "sk-ant-from-envoy"
        assert "authorization" not in sent["headers"]
        assert int(sent["headers"]["content-length"]) == len(sent["raw"])
        assert json.loads(sent["raw"]) == {
            "model": "claude-sonnet-4-6",
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 4096,
            "stop_sequences": ["END"],
            "temperature": 0.2,
        }
        envoy.wait_for_stat(
            f"{MODULE_STATS}.translation_dropped_fields_total.direction.chat_to_messages.field.seed", 1)
    finally:
        recorder.stop()


def test_a_chat_model_outside_the_translation_goes_on_untranslated(start_envoy):
    recorder = Upstream("openai")
    try:
        envoy = start_proxy(start_envoy, recorder.port)
        test_id, tag = tagged()
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
            reply = client.chat.completions.create(model="gpt-4o", messages=user("hi"), extra_headers=tag)
        assert reply.choices[0].message.content == "Hello from the upstream."
        sent = recorder.seen(test_id)
        assert sent["path"] == "/v1/chat/completions"
        assert json.loads(sent["raw"]) == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        assert "anthropic-version" not in sent["headers"]
    finally:
        recorder.stop()


def test_a_tool_loop_keeps_its_ids(sdk):
    messages = user("What is the weather in Oslo?")
    first = sdk.chat.completions.create(model="claude-sonnet-4-6", messages=messages, tools=[WEATHER])
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("toolu_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "3 degrees"}]
    second = sdk.chat.completions.create(model="claude-sonnet-4-6", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


def test_streamed_tool_arguments_and_usage(sdk):
    stream = sdk.chat.completions.create(
        model="claude-sonnet-4-6", messages=user("weather in Oslo"), tools=[WEATHER],
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls: dict[int, dict] = {}
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": call.id, "name": call.function.name, "args": ""})
                entry["args"] += call.function.arguments or ""
    (call,) = calls.values()
    assert call["id"].startswith("toolu_") and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["args"]), WEATHER["function"]["parameters"])
    argument_chunks = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(argument_chunks) > 2, "arguments arrive in pieces, as the upstream streamed them"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens > 0


def test_a_streamed_text_without_usage_asked(sdk):
    chunks = list(sdk.chat.completions.create(
        model="claude-sonnet-4-6", messages=user("stream this reply"), stream=True))
    assert all(c.choices for c in chunks), "no usage chunk the client did not ask for"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "stream this reply"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_sequences_and_max_tokens(sdk):
    stopped = sdk.chat.completions.create(model="claude-sonnet-4-6", messages=user("one two three four"),
                                          stop="three")
    assert stopped.choices[0].message.content == "one two "
    assert stopped.choices[0].finish_reason == "stop"
    cut = sdk.chat.completions.create(model="claude-sonnet-4-6", messages=user("one two three four"),
                                      max_tokens=2)
    assert cut.choices[0].message.content == "one two"
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 2


@pytest.mark.parametrize(("status", "error_class", "kind"), [
    (429, openai.RateLimitError, "rate_limit_error"),
    (401, openai.AuthenticationError, "authentication_error"),
    (500, openai.InternalServerError, "server_error"),
])
def test_an_upstream_error_is_answered_in_openais_envelope(sdk, status, error_class, kind):
    with pytest.raises(error_class) as raised:
        sdk.chat.completions.create(model="claude-sonnet-4-6", messages=user("hi"),
                                    extra_headers={"x-llm-edge-fault": str(status)})
    response = raised.value.response
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind
    assert body["error"]["message"]


def test_a_field_that_would_change_meaning_is_refused_in_openais_envelope(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="claude-sonnet-4-6", messages=user("hi"), temperature=1.5)
    error = raised.value.response.json()["error"]
    assert error["param"] == "temperature" and error["code"] == "untranslatable_parameter"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="claude-sonnet-4-6", messages=user("hi"),
                                    response_format={"type": "json_object"})


@pytest.fixture(scope="module")
def guarded(start_envoy, anthropic_mock):
    config = {"mode": "passthrough", "translate": TRANSLATE,
              "guard": {"detectors": {"email": "mask", "credit_card": "reject"},
                        "reversible": True, "responses": True}}
    return start_envoy(CONFIG, filter_config=json.dumps(config),
                       cluster_ports={"anthropic": anthropic_mock.port,
                                      "openai_compatible": anthropic_mock.port})


def test_the_guard_sees_the_clients_shape_both_ways(guarded, start_envoy):
    with openai.OpenAI(base_url=guarded.base_url + "/v1", api_key="k", max_retries=0) as client:
        whole = client.chat.completions.create(model="claude-sonnet-4-6", messages=user(f"Mail {EMAIL}"))
        streamed = client.chat.completions.create(model="claude-sonnet-4-6", messages=user(f"Mail {EMAIL} now"),
                                                  stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="claude-sonnet-4-6",
                                           messages=user("card 4111 1111 1111 1111"))
    # The upstream echoed the placeholder; the guard restored it in the translated reply.
    assert whole.choices[0].message.content == f"Mail {EMAIL}"
    assert text == f"Mail {EMAIL} now"
    assert refused.value.response.json()["error"]["code"] == "sensitive_data_detected"
    # What the upstream read: the placeholder, never the address.
    recorder = Upstream("anthropic")
    try:
        config = {"mode": "passthrough", "translate": TRANSLATE,
                  "guard": {"detectors": {"email": "mask"}, "reversible": True}}
        envoy = start_envoy(CONFIG, filter_config=json.dumps(config),
                            cluster_ports={"anthropic": recorder.port, "openai_compatible": recorder.port})
        test_id, tag = tagged()
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="m", messages=user(f"Mail {EMAIL}"), extra_headers=tag)
        raw = recorder.seen(test_id)["raw"].decode()
        assert EMAIL not in raw and "[EMAIL_1]" in raw
    finally:
        recorder.stop()


def test_a_budget_charges_the_upstreams_usage_and_refuses_in_openais_shape(start_envoy, anthropic_mock):
    config = {"mode": "passthrough", "translate": TRANSLATE,
              "budgets": {"limits": [{"name": "tiny", "tokens": 1, "per": "hour", "key": "global"}]}}
    envoy = start_envoy(CONFIG, filter_config=json.dumps(config),
                        cluster_ports={"anthropic": anthropic_mock.port, "openai_compatible": anthropic_mock.port})
    with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
        first = client.chat.completions.create(model="claude-sonnet-4-6", messages=user("one two three"),
                                               max_tokens=10)
        envoy.wait_for_stat(f"{MODULE_STATS}.budget_tokens_total.budget.tiny.key.all",
                            first.usage.total_tokens)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="claude-sonnet-4-6", messages=user("again"))
    error = refused.value.response.json()["error"]
    assert error["code"] == "rate_limit_exceeded"


# 2. An Anthropic Messages client, an OpenAI Chat Completions upstream.

CLAUDE_WEATHER = {"name": "get_weather", "description": "Weather for a city",
                  "input_schema": WEATHER["function"]["parameters"]}


@pytest.fixture()
def claude(proxy):
    with anthropic.Anthropic(base_url=proxy.base_url, api_key="client-key", max_retries=0) as client:
        yield client


def test_a_messages_client_gets_its_text(claude):
    message = claude.messages.create(model="gpt-4o", max_tokens=100, system="Be brief.",
                                     messages=user("Hello there"))
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "gpt-4o"
    (block,) = message.content
    assert block.type == "text" and block.text == "Hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0


def test_the_chat_upstream_receives_openais_request(start_envoy):
    recorder = Upstream("openai")
    try:
        envoy = start_proxy(start_envoy, recorder.port, extra_env={"OPENAI_API_KEY": "sk-from-envoy"})
        test_id, tag = tagged()
        with anthropic.Anthropic(base_url=envoy.base_url, api_key="client-key", max_retries=0) as client:
            reply = client.messages.create(
                model="gpt-4o", max_tokens=50, system="Be brief.", stop_sequences=["END"], extra_body={"top_k": 3},
                messages=user("hi"), extra_headers=tag,
            )
        # The recorder answers in chat's shape; the client reads it in Anthropic's.
        assert reply.content[0].text == "Hello from the upstream."
        assert reply.usage.input_tokens == 11 and reply.usage.output_tokens == 5
        sent = recorder.seen(test_id)
        assert sent["path"] == "/v1/chat/completions"
        assert sent["headers"]["authorization"] == "Bearer sk-from-envoy"
        assert "x-api-key" not in sent["headers"]
        assert json.loads(sent["raw"]) == {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "max_tokens": 50,
            "stop": ["END"],
        }
        envoy.wait_for_stat(
            f"{MODULE_STATS}.translation_dropped_fields_total.direction.messages_to_chat.field.top_k", 1)
    finally:
        recorder.stop()


def test_a_messages_tool_loop_keeps_its_ids(claude):
    messages = user("What is the weather in Oslo?")
    first = claude.messages.create(model="gpt-4o", max_tokens=200, tools=[CLAUDE_WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    (block,) = [b for b in first.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.id.startswith("call_")
    jsonschema.validate(block.input, CLAUDE_WEATHER["input_schema"])
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "3 degrees"}]},
    ]
    second = claude.messages.create(model="gpt-4o", max_tokens=200, tools=[CLAUDE_WEATHER], messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text


def test_streamed_tool_input_reaches_a_messages_client(claude):
    with claude.messages.stream(model="gpt-4o", max_tokens=200, tools=[CLAUDE_WEATHER],
                                messages=user("weather in Oslo")) as stream:
        events = list(stream)
        final = stream.get_final_message()
    (block,) = [b for b in final.content if b.type == "tool_use"]
    jsonschema.validate(block.input, CLAUDE_WEATHER["input_schema"])
    pieces = [e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len(pieces) > 2, "the input arrives in pieces, as the upstream streamed it"
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_a_streamed_text_reaches_a_messages_client(claude):
    with claude.messages.stream(model="gpt-4o", max_tokens=100, messages=user("stream this reply")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "stream this reply" == final.content[0].text
    assert final.stop_reason == "end_turn"


def test_messages_stop_sequences_and_max_tokens(claude):
    stopped = claude.messages.create(model="gpt-4o", max_tokens=100, stop_sequences=["three"],
                                     messages=user("one two three four"))
    assert stopped.content[0].text == "one two "
    cut = claude.messages.create(model="gpt-4o", max_tokens=2, messages=user("one two three four"))
    assert cut.content[0].text == "one two"
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


@pytest.mark.parametrize(("status", "error_class", "kind"), [
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (500, anthropic.InternalServerError, "api_error"),
])
def test_an_upstream_error_is_answered_in_anthropics_envelope(claude, status, error_class, kind):
    with pytest.raises(error_class) as raised:
        claude.messages.create(model="gpt-4o", max_tokens=10, messages=user("hi"),
                               extra_headers={"x-llm-edge-fault": str(status)})
    response = raised.value.response
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]


def test_a_messages_field_that_would_change_meaning_is_refused_in_anthropics_envelope(claude):
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="gpt-4o", max_tokens=10, messages=user("hi"),
                               stop_sequences=["a", "b", "c", "d", "e"])
    body = raised.value.response.json()
    assert body["type"] == "error" and "stop_sequences" in body["error"]["message"]


def test_the_guard_sees_a_messages_clients_shape_both_ways(guarded):
    with anthropic.Anthropic(base_url=guarded.base_url, api_key="k", max_retries=0) as client:
        whole = client.messages.create(model="gpt-4o", max_tokens=50, messages=user(f"Mail {EMAIL}"))
        with client.messages.stream(model="gpt-4o", max_tokens=50, messages=user(f"Mail {EMAIL} now")) as stream:
            text = "".join(stream.text_stream)
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model="gpt-4o", max_tokens=50, messages=user("card 4111 1111 1111 1111"))
    assert whole.content[0].text == f"Mail {EMAIL}"
    assert text == f"Mail {EMAIL} now"
    assert refused.value.response.json()["type"] == "error"


def test_a_budget_on_a_messages_client(start_envoy, anthropic_mock):
    config = {"mode": "passthrough", "translate": TRANSLATE,
              "budgets": {"limits": [{"name": "tiny", "tokens": 1, "per": "hour", "key": "global"}]}}
    envoy = start_envoy(CONFIG, filter_config=json.dumps(config),
                        cluster_ports={"anthropic": anthropic_mock.port, "openai_compatible": anthropic_mock.port})
    with anthropic.Anthropic(base_url=envoy.base_url, api_key="k", max_retries=0) as client:
        first = client.messages.create(model="gpt-4o", max_tokens=10, messages=user("one two three"))
        envoy.wait_for_stat(f"{MODULE_STATS}.budget_tokens_total.budget.tiny.key.all",
                            first.usage.input_tokens + first.usage.output_tokens)
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(model="gpt-4o", max_tokens=10, messages=user("again"))
    assert refused.value.response.json()["type"] == "error"


# 3. An OpenAI Responses client, an OpenAI Chat Completions upstream.

RESPONSES_WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                     "parameters": WEATHER["function"]["parameters"]}


def test_a_responses_client_gets_its_text_and_store_is_said_to_be_off(sdk):
    response = sdk.responses.create(model="gpt-4o", instructions="Be brief.", input="Hello there", store=True)
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello there"
    assert response.store is False, "llm-edge stores nothing, and the reply says so"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_the_chat_upstream_receives_a_responses_clients_request(start_envoy):
    recorder = Upstream("openai")
    try:
        envoy = start_proxy(start_envoy, recorder.port)
        test_id, tag = tagged()
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
            response = client.responses.create(model="gpt-4o", instructions="Be brief.", input="hi",
                                               max_output_tokens=50, store=True, extra_headers=tag)
        assert response.output_text == "Hello from the upstream."
        sent = recorder.seen(test_id)
        assert sent["path"] == "/v1/chat/completions"
        assert json.loads(sent["raw"]) == {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "max_tokens": 50,
        }
        envoy.wait_for_stat(
            f"{MODULE_STATS}.translation_dropped_fields_total.direction.responses_to_chat.field.store", 1)
    finally:
        recorder.stop()


def test_a_responses_tool_loop_is_stateless(sdk):
    first = sdk.responses.create(model="gpt-4o", input="What is the weather in Oslo?", tools=[RESPONSES_WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), RESPONSES_WEATHER["parameters"])
    # Continuing by id alone needs a stored response: refused, saying what to send instead.
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="gpt-4o", previous_response_id=first.id, tools=[RESPONSES_WEATHER],
                             input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3 degrees"}])
    error = refused.value.response.json()["error"]
    assert error["param"] == "previous_response_id" and "whole conversation" in error["message"]
    # The whole conversation goes through, previous_response_id or not.
    whole = [{"role": "user", "content": "What is the weather in Oslo?"},
             *[item.model_dump(exclude_none=True) for item in first.output],
             {"type": "function_call_output", "call_id": call.call_id, "output": "3 degrees"}]
    second = sdk.responses.create(model="gpt-4o", previous_response_id=first.id, input=whole,
                                  tools=[RESPONSES_WEATHER])
    assert second.status == "completed" and second.output_text
    assert not [item for item in second.output if item.type == "function_call"]


def test_a_responses_stream_is_numbered_and_ends_with_the_whole_response(sdk):
    events = list(sdk.responses.create(model="gpt-4o", input="weather in Oslo", tools=[RESPONSES_WEATHER],
                                       stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 2, "the arguments arrive in pieces, as the upstream streamed them"
    (call,) = [item for item in events[-1].response.output if item.type == "function_call"]
    assert call.arguments == "".join(pieces)
    jsonschema.validate(json.loads(call.arguments), RESPONSES_WEATHER["parameters"])
    assert events[-1].response.usage.output_tokens > 0
    text_events = list(sdk.responses.create(model="gpt-4o", input="stream this reply", stream=True))
    text = "".join(e.delta for e in text_events if e.type == "response.output_text.delta")
    assert text == "stream this reply" == text_events[-1].response.output_text


def test_a_responses_reply_cut_by_max_output_tokens_is_incomplete(sdk):
    response = sdk.responses.create(model="gpt-4o", input="one two three four", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two"


def test_an_upstream_error_reaches_a_responses_client_in_openais_envelope(sdk):
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.responses.create(model="gpt-4o", input="hi", extra_headers={"x-llm-edge-fault": "429"})
    assert raised.value.response.json()["error"]["message"]


def test_the_guard_and_a_budget_on_a_responses_route(guarded, start_envoy, anthropic_mock):
    with openai.OpenAI(base_url=guarded.base_url + "/v1", api_key="k", max_retries=0) as client:
        whole = client.responses.create(model="gpt-4o", input=f"Mail {EMAIL}")
        streamed = list(client.responses.create(model="gpt-4o", input=f"Mail {EMAIL} now", stream=True))
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="gpt-4o", input="card 4111 1111 1111 1111")
    assert whole.output_text == f"Mail {EMAIL}"
    assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == f"Mail {EMAIL} now"
    assert streamed[-1].response.output_text == f"Mail {EMAIL} now"
    # The deltas the guard held back and released come numbered in line with the rest.
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    config = {"mode": "passthrough", "translate": TRANSLATE,
              "budgets": {"limits": [{"name": "tiny", "tokens": 1, "per": "hour", "key": "global"}]}}
    envoy = start_envoy(CONFIG, filter_config=json.dumps(config),
                        cluster_ports={"anthropic": anthropic_mock.port, "openai_compatible": anthropic_mock.port})
    with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
        first = client.responses.create(model="gpt-4o", input="one two three", max_output_tokens=10)
        envoy.wait_for_stat(f"{MODULE_STATS}.budget_tokens_total.budget.tiny.key.all", first.usage.total_tokens)
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model="gpt-4o", input="again")


# Across directions: parallel tool calls, images, structured output.

TIME = {"type": "function", "function": {"name": "get_time", "description": "Time in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


def test_parallel_tool_calls_reach_a_chat_client_whole_and_streamed(sdk):
    ask = user("get_weather and get_time for Oslo")
    whole = sdk.chat.completions.create(model="claude-sonnet-4-6", messages=ask, tools=[WEATHER, TIME])
    names = [c.function.name for c in whole.choices[0].message.tool_calls]
    assert names == ["get_weather", "get_time"]
    assert len({c.id for c in whole.choices[0].message.tool_calls}) == 2
    calls: dict[int, str] = {}
    for chunk in sdk.chat.completions.create(model="claude-sonnet-4-6", messages=ask, tools=[WEATHER, TIME],
                                             stream=True):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            calls[call.index] = calls.get(call.index, "") + (call.function.arguments or "")
    assert sorted(calls) == [0, 1]
    jsonschema.validate(json.loads(calls[1]), TIME["function"]["parameters"])


def test_parallel_tool_use_reaches_a_messages_client(claude):
    time_tool = {"name": "get_time", "input_schema": TIME["function"]["parameters"]}
    with claude.messages.stream(model="gpt-4o", max_tokens=200, tools=[CLAUDE_WEATHER, time_tool],
                                messages=user("get_weather and get_time for Oslo")) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [b.name for b in uses] == ["get_weather", "get_time"]
    jsonschema.validate(uses[1].input, time_tool["input_schema"])


def test_images_go_up_in_the_upstreams_shape(start_envoy):
    recorder = Upstream("both")
    try:
        envoy = start_proxy(start_envoy, recorder.port)
        chat_id, chat_tag = tagged()
        claude_id, claude_tag = tagged()
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="claude-sonnet-4-6", extra_headers=chat_tag, messages=[
                {"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
        with anthropic.Anthropic(base_url=envoy.base_url, api_key="k", max_retries=0) as client:
            client.messages.create(model="gpt-4o", max_tokens=10, extra_headers=claude_tag, messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}},
                                             {"type": "text", "text": "what is it?"}]}])
        anthropic_blocks = recorder.seen(chat_id)["body"]["messages"][0]["content"]
        assert anthropic_blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                   "data": "iVBORw0KGgo="}}
        chat_parts = recorder.seen(claude_id)["body"]["messages"][0]["content"]
        assert chat_parts[0] == {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}
    finally:
        recorder.stop()


def test_structured_output_reaches_a_responses_client(sdk):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "degrees": {"type": "integer"}},
              "required": ["city", "degrees"], "additionalProperties": False}
    response = sdk.responses.create(model="gpt-4o", input="weather as JSON",
                                    text={"format": {"type": "json_schema", "name": "weather", "schema": schema,
                                                     "strict": True}})
    jsonschema.validate(json.loads(response.output_text), schema)


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "degrees": {"type": "integer"}},
                  "required": ["city", "degrees"], "additionalProperties": False}


def test_a_chat_json_schema_becomes_anthropics_structured_output(sdk, proxy):
    reply = sdk.chat.completions.create(
        model="claude-sonnet-4-6", messages=user("weather as JSON"),
        response_format={"type": "json_schema",
                         "json_schema": {"name": "weather", "strict": True, "schema": WEATHER_SCHEMA}})
    jsonschema.validate(json.loads(reply.choices[0].message.content), WEATHER_SCHEMA)
    proxy.wait_for_stat(
        f"{MODULE_STATS}.translation_dropped_fields_total.direction.chat_to_messages.field.name", 1)


def test_the_anthropic_upstream_receives_output_config(start_envoy):
    recorder = Upstream("anthropic")
    try:
        envoy = start_proxy(start_envoy, recorder.port)
        test_id, tag = tagged()
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
            # The recorder answers in chat's shape: only the request it got matters here.
            client.chat.completions.create(
                model="claude-sonnet-4-6", messages=user("hi"), extra_headers=tag,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA}})
        sent = json.loads(recorder.seen(test_id)["raw"])
        assert sent["output_config"] == {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}}
        assert "response_format" not in sent
    finally:
        recorder.stop()


def test_a_chat_json_object_toward_anthropic_is_refused_naming_it(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="claude-sonnet-4-6", messages=user("hi"),
                                    response_format={"type": "json_object"})
    error = raised.value.response.json()["error"]
    assert error["param"] == "response_format" and error["code"] == "untranslatable_parameter"
    assert "json_object" in error["message"]


def test_a_messages_client_output_config_becomes_a_chat_json_schema(claude):
    message = claude.messages.create(
        model="gpt-4o", max_tokens=200, messages=user("weather as JSON"),
        output_config={"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}})
    (block,) = message.content
    jsonschema.validate(json.loads(block.text), WEATHER_SCHEMA)


# An upstream error with no body, or one that is not JSON.

class BareErrors:
    """An upstream answering every request with `status` and `body` (empty: no body at all)."""

    def __init__(self, status: int, body: bytes = b"", content_type: str = "text/html"):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(status)
                if body:
                    self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("status", "body"), [(429, b""), (503, b""), (502, b"<html>Bad gateway</html>")])
def test_an_upstream_error_without_a_json_body_names_its_status_in_each_dialect(start_envoy, status, body):
    upstream = BareErrors(status, body)
    try:
        envoy = start_proxy(start_envoy, upstream.port)
        message = f"The upstream answered {status}."
        openai_kind = "rate_limit_error" if status == 429 else "server_error"
        with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="claude-sonnet-4-6", messages=user("hi"))
            assert raised.value.status_code == status
            error = raised.value.response.json()["error"]
            assert error["message"] == message and error["type"] == openai_kind
            with pytest.raises(openai.APIStatusError) as raised:
                client.responses.create(model="gpt-4o", input="hi")
            assert raised.value.status_code == status
            error = raised.value.response.json()["error"]
            assert error["message"] == message and error["type"] == openai_kind
        anthropic_kind = {429: "rate_limit_error", 503: "overloaded_error"}.get(status, "api_error")
        with anthropic.Anthropic(base_url=envoy.base_url, api_key="k", max_retries=0) as client:
            with pytest.raises(anthropic.APIStatusError) as raised:
                client.messages.create(model="gpt-4o", max_tokens=10, messages=user("hi"))
            assert raised.value.status_code == status
            reply = raised.value.response.json()
            assert reply == {"type": "error", "error": {"type": anthropic_kind, "message": message}}
    finally:
        upstream.stop()
