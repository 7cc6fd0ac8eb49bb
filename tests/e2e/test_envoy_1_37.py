"""The same module in Envoy 1.37.0, the oldest release it loads into. 1.37 lacks a few callbacks
(found with dlsym, so their absence is no load failure), checks a strict ABI hash, and knows no
`metrics_namespace`, so the full suite, whose configs and stat names use it, runs on 1.38 and
later; here a 1.37-shaped mock config proves the module loads and answers."""

from __future__ import annotations

import httpx
import pytest
import yaml

from harness import MOCK_CONFIG, REPO, Envoy, render_config
from test_chat import CHAT, HELLO, assert_openai_error, sse_events

ENVOYS = REPO / ".envoys"


@pytest.fixture(scope="module")
def envoy_1_37(tmp_path_factory):
    binaries = sorted(ENVOYS.glob("1.37.0/lib/python3*/site-packages/envoy/_bin/envoy"))
    if not binaries:
        pytest.fail(f"Envoy 1.37.0 is missing from {ENVOYS}: `make test` installs it")
    workdir = tmp_path_factory.mktemp("envoy-1.37")
    config_path = render_config(MOCK_CONFIG, workdir / "envoy.yaml")
    config = yaml.safe_load(config_path.read_text())
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"][0]["typed_config"]["dynamic_module_config"].pop("metrics_namespace")
    config_path.write_text(yaml.safe_dump(config))
    envoy = Envoy(config_path, workdir, binary=binaries[0])
    yield envoy
    envoy.stop()


def test_the_module_loads_and_answers(envoy_1_37):
    reply = httpx.post(f"{envoy_1_37.base_url}{CHAT}", json=HELLO, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Hello, edge!"
    assert "llm_edge: filter config accepted" in envoy_1_37.log()


def test_streams_and_refuses_bad_input(envoy_1_37):
    streamed = httpx.post(f"{envoy_1_37.base_url}{CHAT}", json={**HELLO, "stream": True}, timeout=30)
    assert streamed.status_code == 200
    assert sse_events(streamed.text)[-1] == "[DONE]"
    with httpx.Client(base_url=envoy_1_37.base_url, timeout=30) as client:
        assert_openai_error(client.post(CHAT, content=b"{"), 400)
    assert envoy_1_37.alive()
