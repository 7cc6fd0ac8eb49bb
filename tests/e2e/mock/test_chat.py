"""POST /v1/chat/completions answered inside Envoy, over raw HTTP: shapes, content modes, bad input."""

from __future__ import annotations

import json

import httpx
import pytest

from calls import CHAT, HELLO, assert_openai_error, assert_serves
from openai_schema import (
    CREATE_CHAT_COMPLETION_RESPONSE,
    CREATE_CHAT_COMPLETION_STREAM_RESPONSE,
    assert_valid,
)


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(event.startswith("data: ") for event in events), events
    return [event.removeprefix("data: ") for event in events]


def test_echo_reply_is_schema_exact(client):
    reply = client.post(CHAT, json=HELLO)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert_valid(CREATE_CHAT_COMPLETION_RESPONSE, body)
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant", "content": "Hello, edge!", "refusal": None, "annotations": []
    }
    assert (choice["index"], choice["finish_reason"], choice["logprobs"]) == (0, "stop", None)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0


def test_any_model_is_accepted_and_echoed(client):
    for model in ["gpt-5", "llama-3.1-8b-instruct", "my/custom:model"]:
        reply = client.post(CHAT, json={**HELLO, "model": model})
        assert reply.json()["model"] == model


def test_echo_takes_the_last_user_message_and_text_parts(client):
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "look at "},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
                {"type": "text", "text": "this"},
            ]},
        ],
    }
    assert client.post(CHAT, json=body).json()["choices"][0]["message"]["content"] == "look at this"


def test_httpbun_field_overrides_the_content(client):
    body = {**HELLO, "httpbun": {"content": "Overridden, exactly."}}
    reply = client.post(CHAT, json=body)
    assert reply.json()["choices"][0]["message"]["content"] == "Overridden, exactly."


def test_query_string_does_not_matter(client):
    assert client.post(CHAT + "?api-version=2024-10-21", json=HELLO).status_code == 200


def test_stream_is_valid_sse_with_usage(client):
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    reply = client.post(CHAT, json=body)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream"
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        assert_valid(CREATE_CHAT_COMPLETION_STREAM_RESPONSE, chunk)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello, edge!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_chunked_upload_is_buffered_whole(client):
    payload = json.dumps(HELLO).encode()
    pieces = (payload[i:i + 7] for i in range(0, len(payload), 7))
    reply = client.post(CHAT, content=pieces)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "Hello, edge!"


def test_http2_cleartext(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url, http1=False, http2=True) as h2:
        reply = h2.post(CHAT, json=HELLO)
        assert reply.http_version == "HTTP/2"
        assert reply.json()["choices"][0]["message"]["content"] == "Hello, edge!"


def test_other_paths_pass_through_untouched(client):
    # envoy/mock.yaml routes everything else to a direct_response 404: it comes back as is.
    reply = client.get("/v1/files")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "unknown_url"
    assert client.post("/v1/chat/completions/extra", json=HELLO).status_code == 404
    assert_serves(client)


BAD_BODIES = [
    pytest.param(b"", None, None, id="empty"),
    pytest.param(b"{", None, None, id="truncated"),
    pytest.param(b'{"model": "m", "messages": [', None, None, id="truncated-array"),
    pytest.param(b"model=m", None, None, id="not-json"),
    pytest.param(b'{"model": "\xff\xfe", "messages": []}', None, None, id="invalid-utf8"),
    pytest.param(b"[]", None, None, id="array-body"),
    pytest.param(b'{"messages": [{"role": "user", "content": "q"}]}', "model", "missing_required_parameter", id="no-model"),
    pytest.param(b'{"model": 42, "messages": [{"role": "user", "content": "q"}]}', "model", "invalid_type", id="model-not-string"),
    pytest.param(b'{"model": "m"}', "messages", "missing_required_parameter", id="no-messages"),
    pytest.param(b'{"model": "m", "messages": {"role": "user"}}', "messages", "invalid_type", id="messages-not-list"),
    pytest.param(b'{"model": "m", "messages": []}', "messages", "empty_array", id="messages-empty"),
    pytest.param(b'{"model": "m", "messages": [{"role": "wizard", "content": "q"}]}', "messages[0].role", "invalid_value", id="bad-role"),
    pytest.param(b'{"model": "m", "messages": [{"role": "user", "content": 1}]}', "messages[0].content", "invalid_type", id="content-not-string"),
    pytest.param(b'{"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": "yes"}', "stream", "invalid_type", id="stream-not-bool"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_BODIES)
def test_bad_input_gets_an_openai_400_and_envoy_keeps_serving(client, body, param, code):
    reply = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_openai_error(reply, 400, param, code)
    assert_serves(client)


def test_invalid_json_message_explains(client):
    error = assert_openai_error(client.post(CHAT, content=b"{"), 400)
    assert error["message"].startswith("We could not parse the JSON body of your request")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(client, method):
    reply = client.request(method, CHAT)
    error = assert_openai_error(reply, 405)
    assert error["message"] == f"Invalid method for URL ({method} {CHAT})"
    assert reply.headers["allow"] == "POST"
    assert_serves(client)


def test_body_over_the_limit_is_an_openai_413(client):
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * (2 << 20) + b'"}]}'
    error = assert_openai_error(client.post(CHAT, content=big), 413, code="request_too_large")
    assert "1048576" in error["message"]
    assert_serves(client)


def test_chunked_body_over_the_limit_is_an_openai_413(client):
    pieces = (b"a" * 65536 for _ in range(40))
    assert_openai_error(client.post(CHAT, content=pieces), 413, code="request_too_large")
    assert_serves(client)


@pytest.fixture(scope="module")
def fixed_envoy(start_envoy):
    config = {
        "mock": {"content": {"mode": "fixed", "text": "Configured reply."}},
        "max_request_body_bytes": 4 << 20,
    }
    return start_envoy(filter_config=json.dumps(config))


def test_fixed_content_mode(fixed_envoy):
    with httpx.Client(base_url=fixed_envoy.base_url) as http:
        reply = http.post(CHAT, json=HELLO)
        assert reply.json()["choices"][0]["message"]["content"] == "Configured reply."
        overridden = http.post(CHAT, json={**HELLO, "httpbun": {"content": "per request"}})
        assert overridden.json()["choices"][0]["message"]["content"] == "per request"


def test_a_raised_limit_lets_larger_bodies_through_envoy(fixed_envoy):
    # 3 MiB: over Envoy's default 1 MiB HTTP/1.1 buffer, under the configured 4 MiB.
    text = "a" * (3 << 20)
    with httpx.Client(base_url=fixed_envoy.base_url, timeout=30) as http:
        reply = http.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": text}]})
        assert reply.status_code == 200, reply.text[:300]
        # Every byte was read: o200k_base packs runs of "a" into 8-letter tokens.
        assert reply.json()["usage"]["prompt_tokens"] == 3 + 3 + 1 + (3 << 20) // 8
        chunked = http.post(CHAT, content=(b"a" * 65536 for _ in range(80)))
        assert_openai_error(chunked, 413, code="request_too_large")
