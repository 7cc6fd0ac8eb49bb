"""The endpoints beside chat completions: models and embeddings, with the official SDK."""

from __future__ import annotations

import base64
import json
import math
import struct

import httpx
import openai
import pytest

from openai_schema import CREATE_COMPLETION_RESPONSE, ERROR_RESPONSE, assert_valid


@pytest.fixture()
def sdk(mock_envoy):
    with openai.OpenAI(base_url=mock_envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_models_list_and_retrieve(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert ids == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    model = sdk.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "llm-edge")
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.models.retrieve("no-such-model")
    assert raised.value.code == "model_not_found"


def test_embeddings_with_the_sdk_default_base64(sdk):
    # The SDK asks for base64 and decodes it: a round trip of the wire format.
    reply = sdk.embeddings.create(model="text-embedding-3-small", input=["hello", "world", "hello"])
    vectors = [item.embedding for item in reply.data]
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert len(vectors[0]) == 1536
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == 3


def test_embeddings_float_and_dimensions_over_raw_http(mock_envoy):
    body = {"model": "text-embedding-3-small", "input": [[15339, 1917]], "dimensions": 64,
            "encoding_format": "float"}
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        reply = http.post("/v1/embeddings", json=body).json()
        as_base64 = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    floats = reply["data"][0]["embedding"]
    assert len(floats) == 64 and reply["object"] == "list"
    assert reply["data"][0]["object"] == "embedding"
    assert reply["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    decoded = struct.unpack("<64f", base64.b64decode(as_base64["data"][0]["embedding"]))
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, floats))


def test_embedding_errors_name_the_param(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        reply = http.post("/v1/embeddings", json={"model": "m", "input": []})
        assert reply.status_code == 400
        assert_valid(ERROR_RESPONSE, reply.json())
        assert reply.json()["error"]["param"] == "input"
        assert http.get("/v1/embeddings").status_code == 405


@pytest.fixture(scope="module")
def strict_sdk(start_envoy):
    config = {"mock": {"models": ["gpt-4o"], "strict_models": True, "model_aliases": {"gpt-4": "gpt-4o"}}}
    envoy = start_envoy(filter_config=json.dumps(config))
    with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_strict_models_refuse_unknown_models_like_openai(strict_sdk):
    with pytest.raises(openai.NotFoundError) as raised:
        strict_sdk.chat.completions.create(model="gpt-5-nope", messages=[{"role": "user", "content": "q"}])
    assert raised.value.code == "model_not_found"
    assert "The model `gpt-5-nope` does not exist" in raised.value.message


def test_aliases_answer_as_their_target(strict_sdk):
    reply = strict_sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "q"}])
    assert reply.model == "gpt-4o"


def test_legacy_completions_with_the_sdk(sdk, mock_envoy):
    reply = sdk.completions.create(model="gpt-4o", prompt="Say this is a test", max_tokens=3)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == "Say this is"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        raw = http.post("/v1/completions", json={"model": "gpt-4o", "prompt": "hi"}).json()
    assert_valid(CREATE_COMPLETION_RESPONSE, raw)


def test_legacy_completions_stream(sdk, mock_envoy):
    stream = sdk.completions.create(
        model="gpt-4o", prompt="stream these words", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "stream these words"
    assert chunks[-1].usage.completion_tokens == 3
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        body = {"model": "gpt-4o", "prompt": "a b", "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as reply:
            events = [line.removeprefix("data: ") for line in reply.iter_lines() if line]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_valid(CREATE_COMPLETION_RESPONSE, json.loads(event))
