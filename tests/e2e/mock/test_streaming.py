"""Paced replies through the real Envoy: time to first token, inter-token latency, many streams at
once, and clients that hang up mid-stream.

Tests never assert on how fast something was, only on lower bounds that the pacing guarantees
(a step is never sent before it is due) and on completeness. Pacing accuracy is a benchmark.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time

import httpx
import openai
import pytest

from calls import CHAT
from openai_schema import CREATE_CHAT_COMPLETION_STREAM_RESPONSE, assert_valid

TEXT = "one two three four five"  # 5 tokens in o200k_base
STREAM = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": TEXT}]}
ACTIVE = "http.llm_edge.downstream_rq_active"


@pytest.fixture(scope="module")
def paced_envoy(start_envoy):
    config = {"mock": {"latency": {"time_to_first_token_ms": 40, "inter_token_ms": 10}}}
    return start_envoy(filter_config=json.dumps(config), concurrency=2)


def read_events(reply: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in reply.iter_lines() if line]


def test_headers_pace_a_stream_that_stays_exact(mock_envoy):
    headers = {"x-llm-edge-ttft-ms": "150", "x-llm-edge-itl-ms": "30"}
    started = time.monotonic()
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        with http.stream("POST", CHAT, json=STREAM, headers=headers) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "text/event-stream"
            events = read_events(reply)
    elapsed = time.monotonic() - started
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        assert_valid(CREATE_CHAT_COMPLETION_STREAM_RESPONSE, chunk)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == TEXT
    # Five tokens: the first after 150 ms, four more 30 ms apart.
    assert elapsed >= 0.150 + 4 * 0.030


def test_a_whole_reply_waits_as_long_as_the_stream_would(mock_envoy):
    headers = {"x-llm-edge-ttft-ms": "100", "x-llm-edge-itl-ms": "25"}
    body = {**STREAM, "stream": False}
    started = time.monotonic()
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        reply = http.post(CHAT, json=body, headers=headers)
    assert time.monotonic() - started >= 0.100 + 4 * 0.025
    assert reply.json()["choices"][0]["message"]["content"] == TEXT


def test_a_bad_latency_header_is_an_openai_400(mock_envoy):
    with httpx.Client(base_url=mock_envoy.base_url) as http:
        reply = http.post(CHAT, json=STREAM, headers={"x-llm-edge-itl-ms": "fast"})
    assert reply.status_code == 400
    assert "x-llm-edge-itl-ms" in reply.json()["error"]["message"]


def test_configured_latency_with_the_sdk(paced_envoy):
    client = openai.OpenAI(base_url=paced_envoy.base_url + "/v1", api_key="unused", max_retries=0)
    with client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=STREAM["messages"], stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].usage.completion_tokens == 5


def test_a_thousand_concurrent_paced_streams_all_complete(paced_envoy):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))

    async def one(http: httpx.AsyncClient) -> str:
        async with http.stream("POST", CHAT, json=STREAM) as reply:
            lines = [line async for line in reply.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)

    async def all_streams() -> list[str]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=paced_envoy.base_url, limits=limits, timeout=60) as http:
            return await asyncio.gather(*(one(http) for _ in range(1000)))

    assert asyncio.run(all_streams()) == [TEXT] * 1000
    assert paced_envoy.alive()
    paced_envoy.wait_for_stat(ACTIVE, 0)


def test_clients_hanging_up_mid_stream_leave_envoy_serving(paced_envoy):
    slow = {"x-llm-edge-ttft-ms": "0", "x-llm-edge-itl-ms": "60000"}

    async def hang_up(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", CHAT, json=STREAM, headers=slow) as reply:
            async for line in reply.aiter_lines():
                if line:
                    break  # the first chunk arrived: leave with a minute of pacing to go

    async def hang_up_many() -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=paced_envoy.base_url, limits=limits, timeout=30) as http:
            await asyncio.gather(*(hang_up(http) for _ in range(200)))

    asyncio.run(hang_up_many())
    paced_envoy.wait_for_stat(ACTIVE, 0)
    with httpx.Client(base_url=paced_envoy.base_url) as http:
        with http.stream("POST", CHAT, json=STREAM) as reply:
            assert read_events(reply)[-1] == "[DONE]"
    assert paced_envoy.alive()
