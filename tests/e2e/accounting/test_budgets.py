"""Token budgets through the real Envoy: OpenAI's 429 and x-ratelimit-* headers, separate keys,
reservation under a concurrent burst; and the provider-pool config keeping up when one provider
fails."""

from __future__ import annotations

import json
import re
import threading

import httpx
import openai
import pytest

from harness import ENVOY_DIR, MODULE_STATS
from upstream import Upstream, tagged

SEVEN_TOKEN_REPLIES = {
    # A one-token prompt and a six-token reply: 7 tokens a reply.
    "mock": {"content": {"mode": "fixed", "text": "one two three four five six"}},
    "budgets": {"limits": [{"name": "tpm", "tokens": 70, "per": "minute", "key": "global"}]},
}
RESET = re.compile(r"^(\d+m)?\d+s$")


def sdk_for(envoy, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="sk-test", max_retries=0,
                         default_headers=headers)


def test_seventy_tokens_a_minute_answer_ten_seven_token_replies(start_envoy):
    envoy = start_envoy(filter_config=json.dumps(SEVEN_TOKEN_REPLIES))
    with sdk_for(envoy) as sdk:
        for answered in range(1, 11):
            raw = sdk.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Hi")
            assert raw.parse().usage.total_tokens == 7
            assert raw.headers["x-ratelimit-limit-tokens"] == "70"
            assert raw.headers["x-ratelimit-remaining-tokens"] == str(70 - 7 * answered)
            assert RESET.match(raw.headers["x-ratelimit-reset-tokens"])
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi")
    response = refused.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-limit-tokens"] == "70"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert RESET.match(response.headers["x-ratelimit-reset-tokens"])
    error = response.json()["error"]
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert error["param"] is None and "Limit 70, Used 70" in error["message"]
    assert envoy.stat(f"{MODULE_STATS}.budget_tokens_total.budget.tpm.key.all") == 70
    assert envoy.stat(f"{MODULE_STATS}.budget_refusals_total.budget.tpm.key.all") == 1


def test_two_keys_have_separate_budgets(start_envoy):
    config = {
        "mock": SEVEN_TOKEN_REPLIES["mock"],
        "budgets": {"limits": [{"name": "per_tenant", "tokens": 14, "per": "hour",
                                "key": {"header": "x-tenant"}}]},
    }
    envoy = start_envoy(filter_config=json.dumps(config))
    with sdk_for(envoy, **{"x-tenant": "acme"}) as acme, sdk_for(envoy, **{"x-tenant": "globex"}) as globex:
        for _ in range(2):
            acme.completions.create(model="m", prompt="Hi")
        with pytest.raises(openai.RateLimitError):
            acme.completions.create(model="m", prompt="Hi")
        raw = globex.completions.with_raw_response.create(model="m", prompt="Hi")
        assert raw.headers["x-ratelimit-remaining-tokens"] == "7"
        with globex.completions.with_streaming_response.create(
                model="m", prompt="Hi", stream=True) as streamed:
            assert streamed.headers["x-ratelimit-remaining-tokens"] == "0"
            assert "[DONE]" in streamed.read().decode()
    assert envoy.stat(f"{MODULE_STATS}.budget_tokens_total.budget.per_tenant.key.acme") == 14
    assert envoy.stat(f"{MODULE_STATS}.budget_tokens_total.budget.per_tenant.key.globex") == 14


def test_an_api_key_budget_never_names_the_key_in_stats(start_envoy):
    config = {"budgets": {"limits": [{"name": "per_key", "tokens": 1000, "per": "day",
                                      "key": {"header": "authorization"}}]}}
    envoy = start_envoy(filter_config=json.dumps(config))
    with sdk_for(envoy) as sdk:
        sdk.completions.create(model="m", prompt="Hi")
    stats = envoy.admin_get("/stats?filter=budget_tokens_total")
    assert "per_key" in stats and "sk-test" not in stats


@pytest.fixture(scope="module")
def provider():
    upstream = Upstream("provider")
    yield upstream
    upstream.stop()


def test_reservation_holds_a_concurrent_burst_within_the_budget(start_envoy, provider):
    # Each reply uses 16 tokens; a request reserves its prompt plus max_tokens 20. Charging only
    # after replies would let 7 sequential requests spend 112 of 100 tokens.
    config = {"mode": "passthrough",
              "budgets": {"reserve": True,
                          "limits": [{"name": "tpm", "tokens": 100, "per": "minute", "key": "global"}]}}
    envoy = start_envoy(ENVOY_DIR / "passthrough.yaml", filter_config=json.dumps(config),
                        concurrency=2,
                        cluster_ports={"openai_compatible": provider.port, "small_models": provider.port})
    burst = 12
    start = threading.Barrier(burst)
    statuses: list[int] = []

    def one() -> None:
        body = {"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=envoy.base_url, timeout=30) as http:
            start.wait()
            statuses.append(http.post("/v1/chat/completions", json=body).status_code)

    threads = [threading.Thread(target=one) for _ in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = statuses.count(200)
    assert statuses.count(429) == burst - answered >= 1, statuses
    assert answered * 16 <= 100, f"{answered} replies of 16 tokens overshoot the budget"
    assert envoy.stat(f"{MODULE_STATS}.budget_tokens_total.budget.tpm.key.all") == answered * 16


@pytest.fixture()
def pool():
    healthy, failing, local = Upstream("healthy"), Upstream("failing", status=503), Upstream("local")
    yield healthy, failing, local
    for upstream in (healthy, failing, local):
        upstream.stop()


def test_the_provider_pool_keeps_answering_when_a_provider_fails(start_envoy, pool):
    healthy, failing, local = pool
    envoy = start_envoy(ENVOY_DIR / "provider-pool.yaml",
                        cluster_ports={"chat_pool": [healthy.port, failing.port],
                                       "local_pool": local.port})
    chat_ids = []
    with sdk_for(envoy) as sdk:
        for _ in range(30):
            test_id, tag = tagged()
            chat_ids.append(test_id)
            raw = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers=tag)
            assert raw.parse().choices[0].message.content == "Hello from the upstream."
            assert raw.headers["x-ratelimit-limit-tokens"] == "200000"
        local_id, tag = tagged()
        sdk.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}],
                                    extra_headers=tag)
    # Every chat request was answered by the healthy provider, some after the failing one.
    assert all(test_id in healthy.requests for test_id in chat_ids)
    failed = [test_id for test_id in chat_ids if test_id in failing.requests]
    assert failed, "both providers of the pool were tried"
    assert local.seen(local_id)["body"]["model"] == "llama-3.1-8b"
    assert not any(test_id in local.requests for test_id in chat_ids)
    assert local_id not in healthy.requests and local_id not in failing.requests
    assert envoy.stat("cluster.chat_pool.upstream_rq_retry") == len(failed)
    envoy.wait_for_stat("cluster.chat_pool.outlier_detection.ejections_enforced_total", 1)
