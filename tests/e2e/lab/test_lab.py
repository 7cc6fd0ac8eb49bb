"""envoy/lab.yaml: the edge in pass-through mode in front of llm-edge's own mock, in one Envoy."""

from __future__ import annotations

import json

import httpx
import pytest


@pytest.fixture(scope="module")
def lab(start_lab):
    return start_lab()


def chat(lab, content: str, **extra) -> httpx.Response:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(
        f"{lab.base_url}/v1/chat/completions", json=body, headers={"x-tenant": "acme"}, timeout=30
    )


def test_the_provider_sees_the_transformed_request(lab):
    reply = chat(lab, "mail me at jane@example.com", user="u-42")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "gpt-4o"
    echoed = body["choices"][0]["message"]["content"]
    assert "[EMAIL_1]" in echoed
    assert "jane@example.com" not in reply.text


def access_log_entry(lab, marker: str) -> dict:
    """The JSON access-log line of the request whose path carries `marker`."""
    line = lab.wait_for_log(rf"\{{[^\n]*{marker}[^\n]*\}}").group(0)
    return json.loads(line)


def test_the_edge_logs_its_accounting_of_the_provider_reply(lab):
    reply = httpx.post(
        f"{lab.base_url}/v1/chat/completions?case=accounting",
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "count me"}]},
        headers={"x-tenant": "acme"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    entry = access_log_entry(lab, "case=accounting")
    assert entry["status"] == 200
    assert entry["upstream"] == "provider"
    assert entry["model"] == "gpt-4o"
    assert entry["prompt_tokens"] == str(usage["prompt_tokens"])
    assert entry["completion_tokens"] == str(usage["completion_tokens"])
    assert entry["total_tokens"] == str(usage["total_tokens"])


def test_a_credential_is_refused_at_the_edge_and_never_logged(lab):
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    reply = httpx.post(
        f"{lab.base_url}/v1/chat/completions?case=credential",
        json={"model": "gpt-4", "messages": [{"role": "user", "content": f"my key is {key}"}]},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "sensitive_data_detected"
    assert key not in reply.text
    entry = access_log_entry(lab, "case=credential")
    assert entry["status"] == 400
    assert entry["details"] == "llm_edge_invalid_request"
    assert key not in lab.log()
