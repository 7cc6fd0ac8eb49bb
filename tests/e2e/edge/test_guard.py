"""The guard in pass-through mode, through the real Envoy to a loopback upstream that echoes what
it receives: masked values never reach it, reversible mode restores them for the client, reject
refuses with a 400 naming the detector, and no secret appears in Envoy's log or stats."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from harness import ENVOY_DIR, MODULE_STATS
from upstream import Upstream, tagged

SECRET_KEY = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2"
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
GUARD = {
    "mode": "passthrough",
    "guard": {
        "detectors": {"email": "mask", "openai_key": "mask", "credit_card": "reject",
                      "phone": "monitor"},
        "reversible": True,
    },
}


@pytest.fixture(scope="module")
def echo():
    upstream = Upstream("echo", reply_text=None)
    yield upstream
    upstream.stop()


def start_guarded(start_envoy, echo):
    return start_envoy(
        ENVOY_DIR / "passthrough.yaml",
        filter_config=json.dumps(GUARD),
        cluster_ports={"openai_compatible": echo.port, "small_models": echo.port},
    )


@pytest.fixture(scope="module")
def guarded(start_envoy, echo):
    return start_guarded(start_envoy, echo)


def sdk_for(envoy) -> openai.OpenAI:
    return openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0)


@pytest.fixture()
def sdk(guarded):
    with sdk_for(guarded) as client:
        yield client


def test_the_upstream_never_sees_a_masked_value_and_the_client_gets_it_back(sdk, echo):
    text = f"Write to {EMAIL} with key {SECRET_KEY}"
    test_id, tag = tagged()
    reply = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}], extra_headers=tag
    )
    received = echo.seen(test_id)["raw"].decode()
    assert EMAIL not in received and SECRET_KEY not in received
    assert "[EMAIL_1]" in received and "[OPENAI_KEY_1]" in received
    assert reply.choices[0].message.content == text


def test_streamed_replies_are_restored_too(sdk, echo):
    text = f"Ping {EMAIL} now"
    test_id, tag = tagged()
    stream = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}], stream=True, extra_headers=tag
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
    assert EMAIL not in echo.seen(test_id)["raw"].decode()


def test_tool_arguments_stay_valid_json(sdk, echo):
    messages = [
        {"role": "user", "content": "send it"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "send", "arguments": json.dumps({"to": EMAIL, "note": "hi"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sent"},
    ]
    test_id, tag = tagged()
    sdk.chat.completions.create(model="m", messages=messages, extra_headers=tag)
    arguments = echo.seen(test_id)["body"]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"to": "[EMAIL_1]", "note": "hi"}


def test_reject_names_the_detector_and_never_the_value(sdk, echo):
    test_id, tag = tagged()
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"card {CARD}"}], extra_headers=tag
        )
    assert raised.value.code == "sensitive_data_detected"
    assert "credit_card" in raised.value.message
    assert "4111" not in raised.value.response.text
    assert test_id not in echo.requests


def test_no_secret_reaches_logs_or_stats(start_envoy, echo):
    # An Envoy of its own: its log and stats hold this test's requests, whatever ran before.
    envoy = start_guarded(start_envoy, echo)
    with sdk_for(envoy) as sdk:
        sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"{EMAIL} {SECRET_KEY} +1 415-555-2671"}],
        )
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"card {CARD}"}]
            )
    assert envoy.stat(f"{MODULE_STATS}.guard_detections_total.detector.phone.action.monitor") >= 1
    with httpx.Client() as http:
        stats = http.get(f"http://{envoy.admin}/stats").text
    # Whole values: a fragment such as "4111" also spells an ephemeral port in the access log.
    for secret in (EMAIL, SECRET_KEY, CARD, "415-555-2671"):
        assert secret not in envoy.log()
        assert secret not in stats


@pytest.fixture(scope="module")
def split_upstreams():
    echo = Upstream("split-echo", reply_text=None, delta_size=5)
    leaky = Upstream("leaky", reply_text="Contact support@corp.example for help.", delta_size=4)
    yield echo, leaky
    echo.stop()
    leaky.stop()


@pytest.fixture(scope="module")
def split_envoy(start_envoy, split_upstreams):
    echo, leaky = split_upstreams
    config = {"mode": "passthrough",
              "guard": {"detectors": {"email": "mask"}, "reversible": True, "responses": True}}
    return start_envoy(
        ENVOY_DIR / "passthrough.yaml",
        filter_config=json.dumps(config),
        cluster_ports={"openai_compatible": echo.port, "small_models": leaky.port},
    )


def stream_text(envoy, model: str, content: str, **headers: str) -> list[str]:
    with openai.OpenAI(base_url=envoy.base_url + "/v1", api_key="k", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], stream=True,
            extra_headers=headers,
        )
        return [c.choices[0].delta.content or "" for c in stream if c.choices]


def test_a_placeholder_split_across_events_is_restored_whole(split_envoy, split_upstreams):
    echo, _ = split_upstreams
    test_id, tag = tagged()
    deltas = stream_text(split_envoy, "m", f"Mail {EMAIL} now", **tag)
    assert "".join(deltas) == f"Mail {EMAIL} now"
    assert EMAIL not in echo.seen(test_id)["raw"].decode()


def test_a_value_split_across_events_is_masked_whole(split_envoy):
    # The "-mini" route reaches the upstream that leaks an address in 4-character deltas.
    deltas = stream_text(split_envoy, "gpt-4o-mini", "help?")
    assert "".join(deltas) == "Contact [EMAIL_1] for help."
    assert not any("support" in delta or "corp" in delta for delta in deltas)
