"""Pass-through mode through the real Envoy to loopback upstreams: transforms on the way up,
routing on the resolved model, token accounting on the way down (JSON and streamed)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from harness import ENVOY_DIR, MODULE_STATS
from upstream import TEST_ID, Upstream, tagged


@pytest.fixture(scope="module")
def upstreams():
    main, small = Upstream("main"), Upstream("small")
    yield main, small
    main.stop()
    small.stop()


@pytest.fixture(scope="module")
def proxy(start_envoy, upstreams):
    main, small = upstreams
    return start_envoy(
        ENVOY_DIR / "passthrough.yaml",
        cluster_ports={"openai_compatible": main.port, "small_models": small.port},
    )


@pytest.fixture()
def sdk(proxy):
    with openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="upstream-key", max_retries=0) as client:
        yield client


def test_requests_are_transformed_before_the_upstream(sdk, upstreams):
    main, _ = upstreams
    test_id, tag = tagged()
    reply = sdk.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hi"}], user="someone",
        max_tokens=100000, extra_headers={"x-tenant": "acme", **tag},
    )
    assert reply.choices[0].message.content == "Hello from the upstream."
    sent = main.seen(test_id)
    assert sent["headers"][TEST_ID] == test_id, "headers llm-edge does not own pass untouched"
    assert sent["body"]["model"] == "gpt-4o"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "You serve tenant acme."}
    assert "user" not in sent["body"]
    assert sent["body"]["max_tokens"] == 4096
    assert int(sent["headers"]["content-length"]) == len(sent["raw"])
    assert sent["headers"]["x-llm-edge-model"] == "gpt-4o"


def test_the_prompt_is_injected_once(sdk, upstreams):
    main, _ = upstreams
    already = [{"role": "system", "content": "You serve tenant acme."}, {"role": "user", "content": "hi"}]
    test_id, tag = tagged()
    sdk.chat.completions.create(model="gpt-4o", messages=already,
                                extra_headers={"x-tenant": "acme", **tag})
    systems = [m for m in main.seen(test_id)["body"]["messages"] if m["role"] == "system"]
    assert len(systems) == 1


def test_the_resolved_model_routes_and_a_forged_header_does_not(sdk, upstreams):
    main, small = upstreams
    reply = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert json.loads(reply.http_response.text)["served_by"] == "small"
    forged = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-llm-edge-model": "forged-mini"},
    )
    assert json.loads(forged.http_response.text)["served_by"] == "main"


def test_tokens_reach_stats_and_the_access_log(sdk, proxy):
    since = proxy.log_size()
    sdk.chat.completions.create(model="claude-3-opus", messages=[{"role": "user", "content": "count me"}])
    line = proxy.wait_for_log(r"upstream=openai_compatible model=claude-sonnet-4-6 prompt_tokens=11 completion_tokens=5 total_tokens=16", since=since)
    assert line
    assert proxy.stat(f"{MODULE_STATS}.completion_tokens_total.model.claude-sonnet-4-6") >= 5


def test_an_untouched_stream_is_asked_for_usage_in_its_raw_bytes(start_envoy, upstreams):
    """With nothing to transform, the body is not rebuilt: llm-edge only adds stream_options."""
    main, _ = upstreams
    bare = start_envoy(
        ENVOY_DIR / "passthrough.yaml",
        filter_config='{"mode": "passthrough"}',
        cluster_ports={"openai_compatible": main.port, "small_models": main.port},
    )
    test_id, tag = tagged()
    with openai.OpenAI(base_url=bare.base_url + "/v1", api_key="k", max_retries=0) as client:
        chunks = list(client.chat.completions.create(
            model="stream-model", messages=[{"role": "user", "content": "stream"}], stream=True,
            extra_headers=tag,
        ))
    sent = main.seen(test_id)["body"]
    assert sent == {"stream_options": {"include_usage": True}, "model": "stream-model",
                    "messages": [{"role": "user", "content": "stream"}], "stream": True}
    # Spliced in first; a rebuilt body would have its keys sorted, stream_options last.
    assert list(sent)[0] == "stream_options"
    assert all(c.choices for c in chunks), "the usage chunk the client did not ask for is gone"
    bare.wait_for_stat(f"{MODULE_STATS}.completion_tokens_total.model.stream-model", 4)


def test_streams_are_accounted_and_the_usage_chunk_asked_for_is_stripped(sdk, proxy, upstreams):
    main, _ = upstreams
    test_id, tag = tagged()
    since = proxy.log_size()
    stream = sdk.chat.completions.create(
        model="stream-model", messages=[{"role": "user", "content": "stream"}], stream=True,
        extra_headers=tag,
    )
    chunks = list(stream)
    assert main.seen(test_id)["body"]["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the upstream."
    assert all(c.choices for c in chunks), "the usage chunk the client did not ask for is gone"
    proxy.wait_for_log(r"model=stream-model prompt_tokens=11 completion_tokens=4 total_tokens=15",
                       since=since)


def test_a_client_asking_for_usage_keeps_its_chunk(sdk):
    stream = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "s"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 15


def test_non_json_bodies_get_an_openai_400_and_never_reach_the_upstream(proxy, upstreams):
    main, _ = upstreams
    test_id, tag = tagged()
    with httpx.Client(base_url=proxy.base_url) as http:
        reply = http.post("/v1/chat/completions", content=b"not json", headers=tag)
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert test_id not in main.requests


def test_other_paths_and_methods_pass_through_untouched(proxy, upstreams):
    main, _ = upstreams
    test_id, tag = tagged()
    with httpx.Client(base_url=proxy.base_url) as http:
        reply = http.post("/v1/files", content=b"raw bytes", headers=tag)
    assert reply.status_code == 200
    assert main.seen(test_id)["raw"] == b"raw bytes"
