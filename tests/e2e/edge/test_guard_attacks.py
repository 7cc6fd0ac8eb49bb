"""The guard and the accounting against hostile traffic, through the real Envoy to a real ASGI
upstream (Starlette on uvicorn): other spellings of a path, forged routing headers, compressed and
oddly typed replies, CR-only event streams, empty and oversized replies, control characters in
`model`. Each case must come out masked, restored or refused, never forwarded or returned in
clear, with Envoy alive. Every request carries its own `x-test-id`, so no test reads another's.

Both Envoys run envoy/passthrough.yaml: one as shipped (Envoy normalises paths too), one with
Envoy's normalisation removed, to prove llm-edge's own holds when a config forgets it."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re

import pytest
import yaml

from asgi_upstream import AsgiUpstream
from harness import ENVOY_DIR, MODULE_STATS
from upstream import tagged

EMAIL = "jane.doe@example.com"
IBAN = "GB82 WEST 1234 5698 7654 32"
PHONE = "(415) 555-2671"
# A JWT of about 400 bytes: longer than the 256 bytes the hold-back once stopped at.
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4" * 7
       + "." + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
GUARD = {
    "mode": "passthrough",
    "guard": {"detectors": {"email": "mask", "iban": "mask", "phone": "mask", "jwt": "mask"},
              "reversible": True, "responses": True},
}
NORMALISING_KEYS = ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")


@pytest.fixture(scope="module")
def upstream():
    server = AsgiUpstream()
    yield server
    server.stop()


def without_envoys_normalisation(tmp_path) -> object:
    config = yaml.safe_load((ENVOY_DIR / "passthrough.yaml").read_text())
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for key in NORMALISING_KEYS:
                    network_filter["typed_config"].pop(key, None)
    source = tmp_path / "passthrough-raw-paths.yaml"
    source.write_text(yaml.safe_dump(config))
    return source


VARIANTS = ["as shipped", "without Envoy's normalisation"]


def start_proxy(start_envoy, upstream, variant: str, workdir):
    source = ENVOY_DIR / "passthrough.yaml"
    if variant != "as shipped":
        source = without_envoys_normalisation(workdir)
    return start_envoy(
        source,
        filter_config=json.dumps(GUARD),
        cluster_ports={"openai_compatible": upstream.port, "small_models": upstream.port},
    )


@pytest.fixture(scope="module", params=VARIANTS)
def proxy(request, start_envoy, upstream, tmp_path_factory):
    envoy = start_proxy(start_envoy, upstream, request.param, tmp_path_factory.mktemp("config"))
    yield envoy
    assert envoy.alive(), envoy.log()[-3000:]


@pytest.fixture(params=VARIANTS)
def own_proxy(request, start_envoy, upstream, tmp_path):
    """A proxy for one test alone, whose stats count only that test's requests."""
    envoy = start_proxy(start_envoy, upstream, request.param, tmp_path)
    yield envoy
    assert envoy.alive(), envoy.log()[-3000:]


def send(proxy, method: str, path: str, body: dict | None = None, **headers: str):
    """Sends `path` exactly as written (no client-side normalisation); returns (status, headers,
    body bytes, test id)."""
    test_id, tag = tagged()
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    sent = {**tag, "content-type": "application/json",
            **{name.replace("_", "-"): value for name, value in headers.items()}}
    connection.request(method, path, body=data, headers=sent)
    reply = connection.getresponse()
    content = reply.read()
    connection.close()
    return reply.status, {k.lower(): v for k, v in reply.getheaders()}, content, test_id


def chat(text: str, model: str = "gpt-4o", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


ALIASES = [
    "/v1/chat/completions",
    "/v1/chat/%63ompletions",
    "/v1/chat%2Fcompletions",
    "/v1/chat%2fcompletions",
    "//v1/chat/completions",
    "/v1//chat/completions",
    "/v1/chat/completions/",
    "/V1/chat/completions",
    "/v1/CHAT/completions",
    "/v1/chat/completions;x=1",
    "/v1/./chat/completions",
    "/v1/x/../chat/completions",
    "/v1/chat/completions?api-version=2024-10-21",
]


@pytest.mark.parametrize("path", ALIASES)
def test_every_spelling_of_the_chat_path_is_guarded_and_sent_canonically(proxy, upstream, path):
    status, _, content, test_id = send(
        proxy, "POST", path, chat(f"write to {EMAIL}"), x_llm_edge_model="forged-mini"
    )
    assert status == 200, content
    seen = upstream.seen(test_id)
    assert seen["path"] == "/v1/chat/completions"
    assert EMAIL not in seen["raw"].decode()
    assert "[EMAIL_1]" in seen["body"]["messages"][0]["content"]
    assert seen["headers"]["x-llm-edge-model"] == "gpt-4o", "the client's header never routes"
    # Reversible: the client gets its own value back.
    assert json.loads(content)["choices"][0]["message"]["content"] == f"write to {EMAIL}"


def test_a_forged_model_header_never_reaches_the_upstream_on_unclaimed_paths(proxy, upstream):
    status, _, _, test_id = send(proxy, "GET", "/v1/files", x_llm_edge_model="forged-mini")
    assert status == 404
    assert "x-llm-edge-model" not in upstream.seen(test_id)["headers"]


def test_the_upstream_is_asked_for_identity_and_a_compressed_reply_is_refused(proxy, upstream):
    status, headers, content, test_id = send(
        proxy, "POST", "/v1/chat/completions", chat(f"to {EMAIL}"),
        accept_encoding="gzip", x_upstream_reply="gzip",
    )
    assert upstream.seen(test_id)["headers"]["accept-encoding"] == "identity"
    assert status == 200
    if headers.get("content-encoding") == "gzip":
        # The shipped config compresses towards the client, after llm-edge restored the value.
        content = gzip.decompress(content)
    assert json.loads(content)["choices"][0]["message"]["content"] == f"to {EMAIL}"
    # An upstream that compresses anyway: nothing llm-edge cannot read goes through.
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat(f"to {EMAIL}"),
        x_upstream_reply="gzip-always", x_upstream_say=f"new value {EMAIL}",
    )
    assert status == 502
    error = json.loads(content)["error"]
    assert error["code"] == "upstream_reply_unreadable"
    assert EMAIL not in content.decode()


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON", "application/json; charset=utf-8", "application/vnd.api+json",
     "text/json", "text/plain", None],
)
def test_new_values_are_masked_whatever_the_reply_says_it_is(proxy, content_type):
    headers = {"x_upstream_say": f"the admin is {EMAIL}"}
    if content_type:
        headers["x_upstream_content_type"] = content_type
    status, _, content, _ = send(proxy, "POST", "/v1/chat/completions", chat("who?"), **headers)
    assert status == 200
    assert EMAIL not in content.decode()
    assert "[EMAIL_1]" in content.decode()


@pytest.mark.parametrize("eol", ["lf", "cr", "crlf"])
def test_streams_are_guarded_whatever_their_line_breaks(proxy, eol):
    status, headers, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("who?", stream=True),
        x_upstream_reply="stream", x_upstream_eol=eol, x_upstream_say=f"mail {EMAIL} now",
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert EMAIL not in content.decode()
    assert "[EMAIL_1]" in content.decode()


@pytest.mark.parametrize("status", [200, 204, 500])
def test_an_empty_guarded_reply_reaches_the_client(proxy, status):
    # A hang here would fail on the client's timeout: the reply must come at once.
    got, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi"),
        x_upstream_reply="empty", x_upstream_status=str(status),
        x_upstream_content_type="application/json",
    )
    assert (got, content) == (status, b"")


def test_a_large_guarded_reply_is_guarded_and_one_over_the_limit_is_a_502(proxy):
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi"),
        x_upstream_say=f"to {EMAIL}", x_upstream_pad=str(2 << 20),
    )
    assert status == 200
    reply = json.loads(content)
    assert reply["choices"][0]["message"]["content"] == "to [EMAIL_1]"
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi"),
        x_upstream_say=f"to {EMAIL}", x_upstream_pad=str(17 << 20),
    )
    assert status == 502
    assert "max_response_body_bytes" in json.loads(content)["error"]["message"]
    assert EMAIL not in content.decode()


@pytest.mark.parametrize("model", ["gpt-4o\r\nx-injected: 1", "gpt\u0000x", "m" * 300])
def test_a_model_name_that_could_split_a_log_line_is_openais_400(proxy, upstream, model):
    status, _, content, test_id = send(proxy, "POST", "/v1/chat/completions", chat("hi", model))
    assert status == 400
    assert json.loads(content)["error"]["param"] == "model"
    assert test_id not in upstream.requests
    assert "x-injected" not in proxy.log()


def events_of(content: bytes) -> list[dict | str]:
    """The data of each event in a stream, whatever its line breaks: JSON, or `[DONE]`."""
    events = []
    for block in re.split(r"(?:\r\n|\r|\n){2}", content.decode()):
        data = [line[5:].lstrip(" ") for line in re.split(r"\r\n|\r|\n", block)
                if line.startswith("data:")]
        if data:
            joined = "\n".join(data)
            events.append(joined if joined == "[DONE]" else json.loads(joined))
    return events


def chat_text(content: bytes, field: str = "content") -> str:
    """The text a client assembles from a chat stream's deltas."""
    text = ""
    for event in events_of(content):
        if isinstance(event, str):
            continue
        for choice in event.get("choices", []):
            delta = choice.get("delta") or {}
            if field == "arguments":
                for call in delta.get("tool_calls") or []:
                    text += call.get("function", {}).get("arguments") or ""
            else:
                text += delta.get(field) or ""
    return text


@pytest.mark.parametrize("value, placeholder", [
    (EMAIL, "[EMAIL_1]"), (PHONE, "[PHONE_1]"), (IBAN, "[IBAN_1]"), (JWT, "[JWT_1]"),
])
@pytest.mark.parametrize("field", ["content", "reasoning_content", "arguments"])
def test_a_value_streamed_a_character_a_delta_never_reaches_the_client(proxy, value, placeholder,
                                                                      field):
    said = f"Call {value} now, please."
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("who?", stream=True),
        x_upstream_reply="stream", x_upstream_say=said, x_upstream_field=field,
    )
    assert status == 200
    assert value not in content.decode()
    # Every other character arrives, in order: nothing is lost to the hold-back.
    assert chat_text(content, field) == said.replace(value, placeholder)


def test_a_value_in_json_escapes_streamed_a_character_a_delta_in_arguments_is_masked(proxy):
    # The model writes the address's `@` as JSON's `\u0040`, which the client decodes.
    escaped = EMAIL.replace("@", "\\u0040").replace("e", "\\u0065", 1)
    said = f'{{"to": "{escaped}", "cc": "a\\/b"}}'
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("who?", stream=True),
        x_upstream_reply="stream", x_upstream_say=said, x_upstream_field="arguments",
    )
    assert status == 200
    assert json.loads(chat_text(content, "arguments")) == {"to": "[EMAIL_1]", "cc": "a/b"}


@pytest.mark.parametrize("end", ["finish", "done", "eof"])
def test_held_back_text_is_released_however_the_stream_ends(proxy, end):
    said = "Hello wor"
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi", stream=True),
        x_upstream_reply="stream", x_upstream_say=said, x_upstream_end=end,
    )
    assert status == 200
    assert chat_text(content) == said
    if end != "eof":
        assert events_of(content)[-1] == "[DONE]", "released before [DONE], which clients stop at"


def test_a_streamed_placeholder_is_restored_exactly(proxy):
    status, _, content, test_id = send(
        proxy, "POST", "/v1/chat/completions", chat(f"mail {EMAIL}", stream=True),
        x_upstream_reply="stream", x_upstream_say="Sent to [EMAIL_1].",
    )
    assert status == 200
    assert chat_text(content) == f"Sent to {EMAIL}."


def test_responses_and_anthropic_streams_are_held_per_part(proxy):
    said = f"Reach me at {EMAIL} or {PHONE}."
    status, _, content, _ = send(
        proxy, "POST", "/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True},
        x_upstream_say=said,
    )
    assert status == 200
    assert EMAIL not in content.decode() and "555-2671" not in content.decode()
    deltas = "".join(e["delta"] for e in events_of(content)
                     if isinstance(e, dict) and e["type"] == "response.output_text.delta")
    assert deltas == "Reach me at [EMAIL_1] or [PHONE_1]."
    for field in ["text", "input"]:
        said = f"Reach me at {EMAIL}." if field == "text" else json.dumps({"to": EMAIL})
        status, _, content, _ = send(
            proxy, "POST", "/v1/messages",
            {"model": "claude", "max_tokens": 10, "stream": True,
             "messages": [{"role": "user", "content": "hi"}]},
            x_upstream_say=said, x_upstream_field=field,
        )
        assert status == 200
        assert EMAIL not in content.decode(), field
        assert "[EMAIL_1]" in content.decode(), field


def test_request_fields_beyond_messages_are_masked_before_the_upstream(proxy, upstream):
    bodies = {
        "/v1/embeddings": {"model": "text-embedding-3-small", "input": ["a", f"mail {EMAIL}"]},
        "/v1/chat/completions": {
            "model": "gpt-4o", "prediction": {"type": "content", "content": f"to {EMAIL}"},
            "messages": [{"role": "function", "name": "lookup", "content": f"found {EMAIL}"},
                         {"role": "user", "content": "hi"}]},
        "/v1/responses": {"model": "gpt-4o", "stream": True, "input": "hi",
                          "prompt": {"id": "pmpt_1", "variables": {"customer": EMAIL}}},
        "/v1/messages": {
            "model": "claude", "max_tokens": 10, "stream": True,
            "messages": [
                {"role": "user", "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": f"contract for {EMAIL}"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {"to": EMAIL}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent"}]}]},
    }
    for path, body in bodies.items():
        status, _, content, test_id = send(proxy, "POST", path, body, x_upstream_say="ok")
        assert status == 200, (path, content)
        seen = upstream.seen(test_id)["raw"].decode()
        assert EMAIL not in seen, path
        assert "[EMAIL_1]" in seen, path


def test_fullwidth_digits_are_text_not_a_panic(proxy):
    text = "account GB\uff13\uff1312345678901 please"
    status, _, content, _ = send(proxy, "POST", "/v1/chat/completions", chat(text))
    assert status == 200, content
    assert "panic" not in proxy.log()
    assert "\uff13" not in proxy.log()


def chunk_with(content: str, extra: str = "") -> str:
    return ('{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
            f'[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]{extra}}}')


MAIL = "mail " + EMAIL
NAN = ',"x":NaN'
DEEP = ',"x":' + "[" * 200 + "]" * 200


@pytest.mark.parametrize("name, stream", [
    ("NaN", "data: " + chunk_with(MAIL, NAN) + "\n\ndata: [DONE]\n\n"),
    ("deep", "data: " + chunk_with(MAIL, DEEP) + "\n\n"),
    ("surrogate", "data: " + chunk_with(MAIL + " \\ud800") + "\n\n"),
    ("not JSON", "data: " + MAIL + "\n\n"),
    ("comment", ": " + MAIL + "\n\ndata: " + chunk_with("hi") + "\n\n"),
    ("event line", "event: " + EMAIL + "\ndata: " + chunk_with("hi") + "\n\n"),
    ("byte-order mark", "\ufeffdata: " + chunk_with(MAIL) + "\n\n"),
    ("JSON body", '{"choices":[{"index":0,"message":{"content":"' + MAIL + '"}}]}'),
    ("key twice", 'data: {"choices":[{"index":0,"delta":{"content":"' + MAIL
     + '","content":"hi"}}]}\n\n'),
])
def test_no_line_of_a_stream_passes_unread(proxy, name, stream):
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi", stream=True), x_upstream_reply="raw",
        x_upstream_raw=base64.b64encode(stream.encode()).decode(),
        x_upstream_content_type="text/event-stream",
    )
    assert status == 200, name
    assert EMAIL not in content.decode(errors="replace"), name


@pytest.mark.parametrize("body", [
    '{"choices":[{"message":{"content":"mail jane.doe\\u0040example.com"}}],"x":NaN}',
    '{"choices":[{"message":{"content":"mail ' + EMAIL + '","content":"hi"}}]}',
])
def test_a_json_reply_goes_on_only_as_llm_edge_read_it(proxy, body):
    status, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi"), x_upstream_reply="raw",
        x_upstream_raw=base64.b64encode(body.encode()).decode(),
        x_upstream_content_type="application/json",
    )
    assert EMAIL not in content.decode() and "\\u0040" not in content.decode()
    if "NaN" in body:
        assert status == 502
    else:
        assert (status, json.loads(content)["choices"][0]["message"]["content"]) == (200, "hi")


@pytest.mark.parametrize("path", [
    "/chat/completions", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    "/engines/gpt-4o/chat/completions", "/api/v1/chat/completions", "/v1/messages/count_tokens",
])
def test_aliases_an_upstream_serves_are_guarded_too(proxy, upstream, path):
    body = chat(f"mail {EMAIL}")
    if "messages" in path:
        body["max_tokens"] = 10
    _, _, _, test_id = send(proxy, "POST", path, body)
    seen = upstream.seen(test_id)
    assert EMAIL not in seen["raw"].decode()
    assert "[EMAIL_1]" in seen["raw"].decode()
    assert seen["path"] == path.split("?")[0]


B64_TEXT = base64.b64encode(f"contract for {EMAIL}".encode()).decode()
MORE_FIELDS = {
    "unknown role": ("/v1/chat/completions", {"model": "m", "messages": [
        {"role": "human", "content": f"mail {EMAIL}"}, {"role": "User", "content": EMAIL}]}),
    "history": ("/v1/chat/completions", {"model": "m", "messages": [
        {"role": "assistant", "reasoning_content": f"think {EMAIL}",
         "content": [{"type": "refusal", "refusal": f"not {EMAIL}"}],
         "function_call": {"name": "send", "arguments": json.dumps({"to": EMAIL})}},
        {"role": "user", "content": "hi"}]}),
    "tool descriptions, stop, metadata, user": ("/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": [EMAIL],
        "metadata": {"k": EMAIL}, "user": EMAIL,
        "tools": [{"type": "function", "function": {
            "name": "send", "description": f"writes to {EMAIL}",
            "parameters": {"type": "object", "properties": {
                "to": {"type": "string", "description": f"like {EMAIL}"}}}}}]}),
    "suffix": ("/v1/completions", {"model": "m", "prompt": "hi", "suffix": f"mail {EMAIL}"}),
    "nested prompt": ("/v1/embeddings", {"model": "m", "input": [[f"mail {EMAIL}"]]}),
    "base64 document": ("/v1/messages", {"model": "claude", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "document", "source": {
            "type": "base64", "media_type": "text/plain", "data": B64_TEXT}}]}]}),
}


@pytest.mark.parametrize("case", MORE_FIELDS)
def test_every_string_the_model_reads_is_masked_before_the_upstream(proxy, upstream, case):
    path, body = MORE_FIELDS[case]
    _, _, _, test_id = send(proxy, "POST", path, body, x_upstream_say="ok")
    seen = upstream.seen(test_id)["raw"].decode()
    assert EMAIL not in seen, case
    assert B64_TEXT not in seen, case


def test_a_value_in_the_model_refuses_the_request(proxy, upstream):
    status, _, content, test_id = send(proxy, "POST", "/v1/chat/completions", chat("hi", EMAIL))
    assert status == 400
    assert json.loads(content)["error"]["code"] == "sensitive_data_detected"
    assert test_id not in upstream.requests
    assert EMAIL not in proxy.log()


REPLY_WITH_EVERY_FIELD = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok",
                             "audio": {"id": "a1", "transcript": f"mail {EMAIL}"},
                             "annotations": [{"type": "url_citation", "url_citation": {
                                 "url": f"https://x.test/?u={EMAIL}", "title": EMAIL}}]},
                 "logprobs": {"content": [{"token": EMAIL, "logprob": -0.1, "bytes": [1],
                                           "top_logprobs": []}]}}],
})


@pytest.mark.parametrize("status, body", [
    (200, REPLY_WITH_EVERY_FIELD),
    (400, json.dumps({"error": {"message": f"user {EMAIL} not allowed", "type": "x"}})),
])
def test_every_string_of_a_reply_is_guarded(proxy, status, body):
    got, _, content, _ = send(
        proxy, "POST", "/v1/chat/completions", chat("hi"), x_upstream_reply="raw",
        x_upstream_raw=base64.b64encode(body.encode()).decode(), x_upstream_status=str(status),
        x_upstream_content_type="application/json",
    )
    assert got == status
    assert EMAIL not in content.decode()
    reply = json.loads(content)
    if status == 200:
        assert reply["choices"][0]["logprobs"] is None, "logprobs spell the text token by token"
        assert reply["id"] == "chatcmpl-1"


def test_a_stream_of_thousands_of_parts_is_bounded_and_leaks_nothing(own_proxy):
    status, _, content, _ = send(
        own_proxy, "POST", "/v1/chat/completions", chat("hi", stream=True),
        x_upstream_reply="parts", x_upstream_parts="5000", x_upstream_say=f"mail {EMAIL}",
    )
    assert status == 200
    assert EMAIL not in content.decode()
    assert "[EMAIL_1]" in content.decode()
    dropped = own_proxy.stat(f"{MODULE_STATS}.guard_dropped_texts_total.reason.part_cap")
    assert dropped >= 5000 - 512
