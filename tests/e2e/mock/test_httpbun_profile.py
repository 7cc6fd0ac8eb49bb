"""The httpbun profile (envoy/httpbun.yaml) through the real Envoy: the contract httpbun's own
SDK test-suite checks — paths, placeholder replies, exact field sets, usage numbers, ids, stream
shapes and override fields — with the official openai and anthropic SDKs."""

from __future__ import annotations

import re

import anthropic
import httpx
import openai
import pytest
from openai.types.responses import Response

from harness import ENVOY_DIR

CHAT_TEXT = (
    "This is a mock chat response from httpbun. I received your messages and I'm responding "
    "with this placeholder text."
)
RESPONSES_TEXT = (
    "This is a mock responses API response from httpbun. I received your input and I'm "
    "responding with this placeholder text."
)
MESSAGES_TEXT = (
    "This is a mock Anthropic messages API response from httpbun. I received your messages and "
    "I'm responding with this placeholder text."
)
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def httpbun_envoy(start_envoy):
    return start_envoy(ENVOY_DIR / "httpbun.yaml")


@pytest.fixture(params=["/llm/v1", "/llm"])
def openai_sdk(httpbun_envoy, request):
    with openai.OpenAI(base_url=httpbun_envoy.base_url + request.param, api_key="dummy-key") as client:
        yield client


@pytest.fixture()
def claude(httpbun_envoy):
    with anthropic.Anthropic(base_url=httpbun_envoy.base_url + "/llm", api_key="dummy-key") as client:
        yield client


def test_chat_matches_httpbun_field_for_field(openai_sdk):
    response = openai_sdk.chat.completions.create(model="gpt-5-nano", messages=HELLO)
    assert re.fullmatch(r"chatcmpl-[a-f0-9]{24}", response.id)
    assert (response.object, response.model) == ("chat.completion", "gpt-5-nano")
    assert response.service_tier is None and response.system_fingerprint is None
    message = response.choices[0].message
    assert message.content == CHAT_TEXT
    assert message.refusal is None and message.annotations is None and message.tool_calls is None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (3, 29, 32)
    assert response.usage.prompt_tokens_details is None
    # No field beyond the SDK's own model: httpbun sends nothing extra.
    assert set(response.model_dump()) == set(type(response).model_fields)


def test_chat_usage_grows_with_the_conversation_and_ids_differ(openai_sdk):
    longer = openai_sdk.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "You are helpful."}, *HELLO]
    )
    assert longer.usage.prompt_tokens > 3
    ids = {openai_sdk.chat.completions.create(model="m", messages=HELLO).id for _ in range(3)}
    assert len(ids) == 3


def test_streaming_keeps_whitespace_of_the_override(openai_sdk):
    content = "Hello\n\nWorld  with   spaces"
    stream = openai_sdk.chat.completions.create(
        model="gpt-5-nano", messages=HELLO, stream=True, extra_body={"httpbun": {"content": content}}
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == content


def test_responses_match_httpbun(openai_sdk):
    response = openai_sdk.responses.create(model="gpt-5-nano", input="Hello")
    assert response.id.startswith("resp") and response.status == "completed"
    assert response.output_text == RESPONSES_TEXT
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (3, 29, 32)
    assert set(response.model_dump(exclude={"output_text"})) == set(Response.__annotations__)
    message = response.output[0]
    assert set(message.model_dump()) == set(type(message).model_fields)
    part = message.content[0]
    assert set(part.model_dump()) == set(type(part).model_fields)


def test_responses_created_at_is_whole_seconds(httpbun_envoy):
    # httpbun writes `1796301848`; strict decoders (Go, serde) reject `1796301848.0`.
    with httpx.Client(base_url=httpbun_envoy.base_url) as http:
        whole = http.post("/llm/v1/responses", json={"input": "Hello"})
        assert re.search(rb'"created_at":\d+,', whole.content), whole.content[:200]
        streamed = http.post("/llm/v1/responses", json={"input": "Hello", "stream": True})
        stamps = re.findall(rb'"created_at":([0-9.e+]+)', streamed.content)
        assert stamps and all(stamp.isdigit() for stamp in stamps), stamps


def test_responses_stream_and_helper(openai_sdk):
    events = list(openai_sdk.responses.create(model="gpt-5-nano", input="Hello", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == RESPONSES_TEXT
    with openai_sdk.responses.stream(
        model="gpt-5-nano", input="Hello", extra_body={"httpbun": {"output_text": "Line one\n\nLine  two"}}
    ) as stream:
        assert stream.get_final_response().output_text == "Line one\n\nLine  two"


def test_anthropic_matches_httpbun(claude):
    message = claude.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=1024, messages=HELLO)
    assert re.fullmatch(r"msg-[a-f0-9]{24}", message.id)
    assert message.content[0].text == MESSAGES_TEXT
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 33)
    block = message.content[0]
    assert set(block.model_dump()) == set(type(block).model_fields)
    with claude.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == MESSAGES_TEXT


def test_legacy_completions_and_errors(httpbun_envoy):
    with httpx.Client(base_url=httpbun_envoy.base_url) as http:
        reply = http.post("/llm/v1/completions", json={"prompt": "Say"}).json()
        assert reply["model"] == "gpt-3.5-turbo-instruct"
        assert reply["choices"][0]["text"].startswith("This is a mock completion response from httpbun.")
        bad = http.post("/llm/v1/chat/completions", content=b"{")
        assert bad.status_code == 400
        assert bad.json()["error"]["message"].startswith("Invalid JSON in request body: ")
        wrong = http.get("/llm/v1/chat/completions")
        assert (wrong.status_code, wrong.json()) == (405, {"error": "Method not allowed"})
        # The spec paths are not part of this profile: they pass through to the 404 route.
        assert http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code == 404
