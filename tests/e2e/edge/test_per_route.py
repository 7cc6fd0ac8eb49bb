"""Per-route policies (envoy/per_route.yaml) through the real Envoy: routes that extend, replace
or disable the listener's llm-edge policy, and bad per-route configs refused at load."""

from __future__ import annotations

import httpx
import pytest

from calls import CHAT
from harness import ENVOY_DIR, render_config, validate



def ask(envoy, team: str | None, content: str) -> httpx.Response:
    headers = {"x-team": team} if team else {}
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    with httpx.Client(base_url=envoy.base_url) as http:
        return http.post(CHAT, json=body, headers=headers)


@pytest.fixture(scope="module")
def routed(start_envoy):
    return start_envoy(ENVOY_DIR / "per_route.yaml")


def test_the_listener_policy_applies_where_no_route_says_otherwise(routed):
    reply = ask(routed, None, "mail a@b.io, card 4111 1111 1111 1111")
    assert reply.json()["choices"][0]["message"]["content"] == "mail [EMAIL_1], card 4111 1111 1111 1111"


def test_a_route_can_extend_the_policy(routed):
    reply = ask(routed, "legal", "card 4111 1111 1111 1111")
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "sensitive_data_detected"
    assert ask(routed, "legal", "mail a@b.io").json()["choices"][0]["message"]["content"] == "mail [EMAIL_1]"


def test_a_route_can_replace_or_disable_it(routed):
    assert ask(routed, "lab", "hi").json()["choices"][0]["message"]["content"] == "Lab reply."
    raw = ask(routed, "raw", "hi")
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "unknown_url"


def test_a_bad_per_route_config_is_refused_with_the_reason(tmp_path):
    config = render_config(ENVOY_DIR / "per_route.yaml", tmp_path / "bad.yaml")
    config.write_text(config.read_text().replace('"credit_card": "reject"', '"credit_card": "shred"'))
    result = validate(config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "llm_edge: invalid per-route config: field `extend.guard.detectors.credit_card`" in output
