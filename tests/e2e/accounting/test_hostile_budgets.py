"""Budgets that cannot be dodged and requests that cannot stall a worker or balloon Envoy, through
the real Envoy: routes that would fork a ledger, key churn, header case, limit fields, 1 MiB
prompts of every character class with a liveness probe beside them, and the amplification request
with Envoy's peak memory read from /proc."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from calls import CHAT, HELLO
from harness import ENVOY_DIR, MODULE_STATS, proc_status
from upstream import Upstream

SEVEN_TOKEN_REPLIES = {"mode": "fixed", "text": "one two three four five six"}


def chat_post(http, **headers):
    """Posts a small chat request; `x_team="lab"` sends the header `x-team: lab`."""
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return http.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
                     headers=named)


def spend(http, limit: int = 50, **headers) -> None:
    """Sends the same request until the budget refuses it (at most `limit` times)."""
    for _ in range(limit):
        if chat_post(http, **headers).status_code == 429:
            return
    raise AssertionError("the budget never refused")


def test_routes_share_the_listeners_ledger(start_envoy):
    config = {"guard": {"detectors": {"email": "mask"}},
              "mock": {"content": SEVEN_TOKEN_REPLIES},
              "budgets": {"limits": [{"name": "all", "tokens": 30, "per": "minute",
                                      "key": "global"}]}}
    envoy = start_envoy(ENVOY_DIR / "per_route.yaml", filter_config=json.dumps(config))
    with httpx.Client(base_url=envoy.base_url, timeout=10) as http:
        spend(http)
        # The extending route (legal) and the replacing one (lab) hold the same ledger.
        for team in ["legal", "lab"]:
            refused = chat_post(http, x_team=team)
            assert refused.status_code == 429, team
            assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    # Each route was really taken: the lab's replacing policy would have answered its own text.
    assert envoy.stat(f"{MODULE_STATS}.budget_refusals_total.budget.all.key.all") == 3


def test_junk_keys_cannot_refill_a_spent_key(start_envoy):
    config = {"mock": {"content": SEVEN_TOKEN_REPLIES},
              "budgets": {"max_keys": 2,
                          "limits": [{"name": "tenant", "tokens": 20, "per": "minute",
                                      "key": {"header": "X-Api-Key"}}]}}
    envoy = start_envoy(filter_config=json.dumps(config))
    with httpx.Client(base_url=envoy.base_url, timeout=10) as http:
        spend(http, **{"x-api-key": "victim-spent"})
        statuses = [chat_post(http, **{"x-api-key": f"junk-{i}"}).status_code for i in range(200)]
        assert statuses.count(200) <= 2 and 429 in statuses
        assert chat_post(http, **{"x-api-key": "victim-spent"}).status_code == 429
    full = envoy.stat(f"{MODULE_STATS}.budget_keys_full_total.budget.tenant")
    assert full == statuses.count(429)


def test_header_case_and_bearer_spellings_do_not_fork_a_key(start_envoy):
    config = {"mock": {"content": SEVEN_TOKEN_REPLIES},
              "budgets": {"limits": [
                  {"name": "tenant", "tokens": 20, "per": "minute", "key": {"header": "X-Tenant"}},
                  {"name": "caller", "tokens": 20, "per": "minute",
                   "key": {"header": "Authorization"}}]}}
    envoy = start_envoy(filter_config=json.dumps(config))
    with httpx.Client(base_url=envoy.base_url, timeout=10) as http:
        spend(http, x_tenant="a", authorization="Bearer sk-1")
        assert chat_post(http, x_tenant="b", authorization="Bearer sk-2").status_code == 200
        for spelling in ["bearer sk-1", "BEARER  sk-1", "Bearer\tsk-1"]:
            assert chat_post(http, x_tenant="c", authorization=spelling).status_code == 429


@pytest.fixture(scope="module")
def upstream():
    server = Upstream("upstream")
    yield server
    server.stop()


def test_each_endpoint_reserves_from_the_field_its_provider_honours(start_envoy, upstream):
    config = {"mode": "passthrough",
              "budgets": {"reserve": True,
                          "limits": [{"name": "r", "tokens": 50000, "per": "minute",
                                      "key": "global"}]}}
    envoy = start_envoy(ENVOY_DIR / "passthrough.yaml", filter_config=json.dumps(config),
                        cluster_ports={"openai_compatible": upstream.port,
                                       "small_models": upstream.port})
    with httpx.Client(base_url=envoy.base_url, timeout=10) as http:
        message = {"model": "claude-sonnet-4-6", "max_tokens": 100000, "max_completion_tokens": 1,
                   "messages": [{"role": "user", "content": "Hi"}]}
        refused = http.post("/v1/messages", json=message)
        assert refused.status_code == 429
        assert refused.json()["type"] == "error", "Anthropic's own error shape"
        assert "Requested 10000" in refused.json()["error"]["message"]
        chat = {"model": "gpt-4o", "max_tokens": 100000, "max_completion_tokens": 10,
                "messages": [{"role": "user", "content": "Hi"}]}
        assert http.post(CHAT, json=chat).status_code == 429, "the larger of two limits"


CLASSES = {"digits": "1", "spaces": " ", "letters": "a", "punctuation": "!", "newlines": "\n",
           "accented": "é", "cjk": "中", "emoji": "🦀"}


@pytest.fixture(scope="module")
def roomy(start_envoy):
    return start_envoy(filter_config=json.dumps({"max_request_body_bytes": 8 << 20}))


@pytest.mark.parametrize("kind", CLASSES)
def test_a_megabyte_of_one_character_class_is_counted_while_the_worker_serves(roomy, kind):
    prompt = CLASSES[kind] * ((1 << 20) // len(CLASSES[kind].encode()))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1}
    outcome = {}

    def hostile():
        with httpx.Client(base_url=roomy.base_url, timeout=60) as http:
            outcome["reply"] = http.post(CHAT, json=body)

    thread = threading.Thread(target=hostile)
    thread.start()
    # The one worker answers an unrelated request beside it (a stall would hit this timeout).
    with httpx.Client(base_url=roomy.base_url, timeout=20) as probe:
        assert probe.post(CHAT, json=HELLO).status_code == 200
    thread.join(timeout=60)
    reply = outcome["reply"]
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["usage"]["prompt_tokens"] > 0
    assert roomy.alive()


def test_the_amplification_request_is_refused_with_envoys_memory_flat(start_envoy):
    envoy = start_envoy()
    pid = envoy.process.pid
    prompt = "The quick brown fox jumps over the lazy dog. " * 730  # about 32 KiB
    body = {"model": "gpt-4o", "stream": True, "n": 128,
            "messages": [{"role": "user", "content": prompt}]}
    with httpx.Client(base_url=envoy.base_url, timeout=60) as http:
        before = proc_status(pid, "VmHWM")
        refused = http.post(CHAT, json=body)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("n", "reply_too_large")
        body["n"] = 4
        with http.stream("POST", CHAT, json=body) as served:
            assert served.status_code == 200
            assert b"data: [DONE]" in b"".join(served.iter_bytes())
    # The refused reply was 506 MB before; the largest allowed one is bounded by 16 MiB.
    assert proc_status(pid, "VmHWM") - before < 256 * 1024
