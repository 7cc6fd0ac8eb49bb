"""A loaded server through the real Envoy: admission and the queue per model, vLLM's metrics while
streams run, cached prompt tokens through the official SDK, prefill skipped for them, and
scenario faults a client's retries get past.

No test asserts on wall time: a reply's place in the queue is read from its `x-llm-edge-queue-ms`
header (the planned wait), and latencies from the metrics the mock computes.
"""

from __future__ import annotations

import asyncio
import json
import re

import anthropic
import httpx
import openai
import pytest

from calls import CHAT

TEXT = "one two three four five"  # 5 tokens in o200k_base
STREAM = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": TEXT}]}
QUEUE = "x-llm-edge-queue-ms"
# A prompt long enough for a few cache blocks (16 tokens, 64 bytes each).
LONG = " ".join(f"word{i}" for i in range(120))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels}` in Prometheus text."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(r"^" + re.escape(name) + r"\{([^}]*)\} (\S+)$", re.M)
    for found, value in pattern.findall(text):
        if found == wanted:
            return float(value)
    raise AssertionError(f"{name}{{{wanted}}} not in metrics:\n{text}")


@pytest.fixture(scope="module")
def loaded_envoy(start_envoy):
    config = {
        "mock": {
            "latency": {"time_to_first_token_ms": 1500, "inter_token_ms": 50},
            "load": {"max_concurrent": 2, "max_queue": 2, "metrics_path": "/metrics"},
        }
    }
    # Two workers: the places are shared by both.
    return start_envoy(filter_config=json.dumps(config), concurrency=2)


@pytest.fixture(scope="module")
def cache_envoy(start_envoy):
    config = {
        "mock": {
            "load": {"prefill_ms_per_token": 10, "metrics_path": "/metrics"},
            "faults": {"scenario": {"fail_first": 2, "status": 503}},
        }
    }
    return start_envoy(filter_config=json.dumps(config))


async def open_stream(http: httpx.AsyncClient) -> tuple[httpx.Response, asyncio.Task | None]:
    """Starts a stream; returns its reply (headers in) and a task reading the rest."""
    request = http.build_request("POST", CHAT, json=STREAM)
    reply = await http.send(request, stream=True)
    if reply.status_code != 200:
        await reply.aread()
        return reply, None
    return reply, asyncio.create_task(reply.aread())


def test_five_streams_on_two_places_and_a_queue_of_two(loaded_envoy):
    async def burst():
        async with httpx.AsyncClient(base_url=loaded_envoy.base_url, timeout=30) as http:
            opened = await asyncio.gather(*(open_stream(http) for _ in range(5)))
            during = (await http.get("/metrics")).text
            for reply, rest in opened:
                if rest is not None:
                    await rest
            after = (await http.get("/metrics")).text
            return opened, during, after

    opened, during, after = asyncio.run(burst())
    replies = [reply for reply, _ in opened]
    assert sorted(r.status_code for r in replies) == [200, 200, 200, 200, 429]
    refused = next(r for r in replies if r.status_code == 429)
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "2 requests running and 2 waiting" in error["message"]
    waits = sorted(int(r.headers[QUEUE]) for r in replies if r.status_code == 200)
    # Two start at once; two wait for them (1.5 s to the first token, four more 50 ms apart).
    assert waits[:2] == [0, 0]
    assert all(wait > 1000 for wait in waits[2:]), waits
    for reply in replies:
        if reply.status_code == 200:
            assert reply.text.rstrip().endswith("data: [DONE]")
    assert metric(during, "vllm:num_requests_running", model_name="gpt-4o") == 2
    assert metric(during, "vllm:num_requests_waiting", model_name="gpt-4o") == 2
    assert metric(after, "vllm:num_requests_running", model_name="gpt-4o") == 0
    assert metric(after, "vllm:num_requests_waiting", model_name="gpt-4o") == 0
    stops = metric(after, "vllm:request_success_total", finished_reason="stop", model_name="gpt-4o")
    assert stops == 4
    # Queue wait is part of the time to first token: two of four waited over a second.
    first_token = "vllm:time_to_first_token_seconds_bucket"
    assert metric(after, first_token, model_name="gpt-4o", le="2.5") == 2
    assert metric(after, first_token, model_name="gpt-4o", le="+Inf") == 4
    assert "# TYPE vllm:inter_token_latency_seconds histogram" in after
    assert loaded_envoy.alive(), loaded_envoy.log()


def test_the_queue_full_reply_on_the_messages_api_is_anthropics(loaded_envoy):
    async def burst():
        async with httpx.AsyncClient(base_url=loaded_envoy.base_url, timeout=30) as http:
            opened = await asyncio.gather(*(open_stream(http) for _ in range(4)))
            body = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
            refused = await http.post("/v1/messages", json=body)
            for reply, rest in opened:
                if rest is not None:
                    await rest
            return refused

    refused = asyncio.run(burst())
    assert refused.status_code == 429
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_a_repeated_prompt_reports_cached_tokens_through_the_sdks(cache_envoy):
    base = cache_envoy.base_url
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "summarise"}]
    with openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0) as sdk:
        first = sdk.chat.completions.create(model="cache-a", messages=messages)
        second = sdk.chat.completions.create(model="cache-a", messages=messages)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        cached = second.usage.prompt_tokens_details.cached_tokens
        assert 0 < cached < second.usage.prompt_tokens
        assert cached % 16 == 0
        # Another model has a cache of its own.
        other = sdk.chat.completions.create(model="cache-b", messages=messages)
        assert other.usage.prompt_tokens_details.cached_tokens == 0
        sdk.responses.create(model="cache-c", instructions=LONG, input="summarise")
        again = sdk.responses.create(model="cache-c", instructions=LONG, input="summarise")
        assert again.usage.input_tokens_details.cached_tokens > 0
    with anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0) as claude:
        ask = {"model": "cache-d", "max_tokens": 32, "system": LONG,
               "messages": [{"role": "user", "content": "summarise"}]}
        cold = claude.messages.create(**ask).usage
        warm = claude.messages.create(**ask).usage
        assert cold.cache_read_input_tokens == 0 and warm.cache_read_input_tokens > 0
        # As Anthropic counts: cache reads apart from the uncached rest of the prompt.
        assert warm.input_tokens + warm.cache_read_input_tokens == cold.input_tokens
    metrics = httpx.get(base + "/metrics").text
    hits = metric(metrics, "vllm:prefix_cache_hits_total", model_name="cache-a")
    assert hits == cached
    assert 0 < metric(metrics, "vllm:kv_cache_usage_perc", model_name="cache-a") < 1
    # Prefill is 10 ms per uncached token: the second prompt's first token came far sooner.
    total = metric(metrics, "vllm:time_to_first_token_seconds_sum", model_name="cache-a")
    uncached = 2 * second.usage.prompt_tokens - cached
    assert total == pytest.approx(uncached * 0.010, abs=0.002)


def test_a_scenario_fails_its_first_requests_and_the_sdks_retries_get_through(cache_envoy):
    base = cache_envoy.base_url
    messages = [{"role": "user", "content": TEXT}]
    header = {"x-llm-edge-scenario": "retry-once-more"}
    with openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0) as sdk:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as raised:
                sdk.chat.completions.create(model="gpt-4o", messages=messages, extra_headers=header)
            assert raised.value.status_code == 503
        reply = sdk.chat.completions.create(model="gpt-4o", messages=messages, extra_headers=header)
        assert reply.choices[0].message.content == TEXT
    # A fresh key fails twice again; the SDK's own retries get it through.
    header = {"x-llm-edge-scenario": "retried-by-the-sdk"}
    with openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=2) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, extra_headers=header
        )
        assert raw.retries_taken == 2
        assert raw.parse().choices[0].message.content == TEXT
