"""llm-edge's stats in Envoy's admin API: requests by outcome, tokens by model, faults by type."""

from __future__ import annotations

import httpx

CHAT = "/v1/chat/completions"


def test_requests_tokens_and_faults_are_counted(start_envoy):
    envoy = start_envoy()
    with httpx.Client(base_url=envoy.base_url) as http:
        ok = http.post(CHAT, json={"model": "stat-model", "messages": [{"role": "user", "content": "hello world"}]})
        http.post(CHAT, content=b"{")
        http.post(CHAT, json={"model": "stat-model", "messages": [{"role": "user", "content": "x"}]},
                  headers={"x-llm-edge-fault": "503"})
    usage = ok.json()["usage"]
    stat = envoy.stat
    assert stat("llm_edge.requests_total.endpoint.chat_completions.outcome.ok") == 1
    assert stat("llm_edge.requests_total.endpoint.chat_completions.outcome.invalid_request") == 1
    assert stat("llm_edge.requests_total.endpoint.chat_completions.outcome.fault") == 1
    assert stat("llm_edge.faults_total.type.503") == 1
    assert stat("llm_edge.prompt_tokens_total.model.stat-model") == usage["prompt_tokens"]
    assert stat("llm_edge.completion_tokens_total.model.stat-model") == usage["completion_tokens"]
    prometheus = envoy.admin_get("/stats/prometheus")
    assert 'envoy_llm_edge_requests_total{endpoint="chat_completions",outcome="ok"} 1' in prometheus
    assert "# TYPE envoy_llm_edge_time_to_first_token_ms histogram" in prometheus
