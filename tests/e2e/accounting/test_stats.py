"""llm-edge's stats in Envoy's admin API: requests by outcome, tokens by model, faults by type."""

from __future__ import annotations

import httpx

from calls import CHAT
from harness import MODULE_PROMETHEUS_PREFIX, MODULE_STATS



def test_requests_tokens_and_faults_are_counted(start_envoy):
    envoy = start_envoy()
    with httpx.Client(base_url=envoy.base_url) as http:
        ok = http.post(CHAT, json={"model": "stat-model", "messages": [{"role": "user", "content": "hello world"}]})
        http.post(CHAT, content=b"{")
        http.post(CHAT, json={"model": "stat-model", "messages": [{"role": "user", "content": "x"}]},
                  headers={"x-llm-edge-fault": "503"})
    usage = ok.json()["usage"]
    stat = envoy.stat
    assert stat(f"{MODULE_STATS}.requests_total.endpoint.chat_completions.outcome.ok") == 1
    assert stat(f"{MODULE_STATS}.requests_total.endpoint.chat_completions.outcome.invalid_request") == 1
    assert stat(f"{MODULE_STATS}.requests_total.endpoint.chat_completions.outcome.fault") == 1
    assert stat(f"{MODULE_STATS}.faults_total.type.503") == 1
    assert stat(f"{MODULE_STATS}.prompt_tokens_total.model.stat-model") == usage["prompt_tokens"]
    assert stat(f"{MODULE_STATS}.completion_tokens_total.model.stat-model") == usage["completion_tokens"]
    prometheus = envoy.admin_get("/stats/prometheus")
    ok_line = 'requests_total{endpoint="chat_completions",outcome="ok"} 1'
    assert MODULE_PROMETHEUS_PREFIX + ok_line in prometheus
    assert f"# TYPE {MODULE_PROMETHEUS_PREFIX}time_to_first_token_ms histogram" in prometheus
