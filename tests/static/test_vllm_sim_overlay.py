"""The kind lab's vllm-sim overlay, read without a cluster: several mock pods, each serving vLLM's
metrics on the path its own filter config names, with Prometheus annotations that point there.
(test_manifests.py validates its resources and its Envoy config like every other manifest's.)"""

from __future__ import annotations

import json

import yaml

import kustomize
from harness import REPO

OVERLAY = REPO / "manifests" / "overlays" / "vllm-sim"


def resources() -> list[dict]:
    return kustomize.build(OVERLAY)


def only(kind: str) -> dict:
    (resource,) = [r for r in resources() if r["kind"] == kind]
    return resource


def filter_config(envoy: dict) -> dict:
    (listener,) = envoy["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    (module, _router) = manager["typed_config"]["http_filters"]
    return json.loads(module["typed_config"]["filter_config"]["value"])


def listener_port(envoy: dict) -> int:
    (listener,) = envoy["static_resources"]["listeners"]
    return listener["address"]["socket_address"]["port_value"]


def test_several_mock_pods_are_scraped_where_they_serve_vllms_metrics():
    envoy = yaml.safe_load(only("ConfigMap")["data"]["envoy.yaml"])
    config = filter_config(envoy)
    assert config.get("mode", "mock") == "mock"
    load = config["mock"]["load"]
    deployment = only("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == load["metrics_path"]
    assert int(annotations["prometheus.io/port"]) == listener_port(envoy)
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == listener_port(envoy)


def test_the_pods_model_a_loaded_server_and_its_adapters_are_served_models():
    envoy = yaml.safe_load(only("ConfigMap")["data"]["envoy.yaml"])
    mock = filter_config(envoy)["mock"]
    load = mock["load"]
    assert load["max_concurrent"] >= 1 and load["max_queue"] >= 1
    assert load["load_factor"] > 1 and load["prefill_ms_per_token"] > 0
    for adapter, base in load.get("lora_adapters", {}).items():
        assert {adapter, base} <= set(mock["models"])


def test_the_service_selects_the_overlays_pods():
    service = only("Service")
    labels = only("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
