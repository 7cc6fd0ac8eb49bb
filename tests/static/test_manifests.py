"""The Kubernetes manifests, read without a cluster: every kustomization renders, every resource of a
core kind validates against the Kubernetes schema, every Envoy config in a ConfigMap validates with
the real Envoy and module, and the Envoy Gateway resources agree with the image and with each other."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import kustomize
from harness import MOCK_CONFIG, PIN, REPO, render_config, validate

MANIFESTS = REPO / "manifests"
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob(kustomize.KUSTOMIZATION))
# Applied on their own, outside any kustomization.
STANDALONE = [MANIFESTS / "gateway-api" / "httproute.yaml"]
# The oldest Kubernetes the lab claims (kind's node images from 1.30) and the newest schema known.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Custom resources, which no bundled schema covers: the checks below read them instead.
CUSTOM_KINDS = {
    ("gateway.networking.k8s.io/v1", "GatewayClass"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"),
}
IMAGE = f"llm-edge:{PIN['ENVOY_VERSION']}"
MODULE_PATH = "/usr/local/lib/llm-edge/libllm_edge.so"


def rendered(directory: Path) -> list[dict]:
    return kustomize.build(directory)


def every_resource() -> list[tuple[str, dict]]:
    resources = []
    for directory in KUSTOMIZATIONS:
        label = str(directory.relative_to(MANIFESTS))
        resources += [(label, resource) for resource in rendered(directory)]
    for path in STANDALONE:
        label = str(path.relative_to(MANIFESTS))
        resources += [(label, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return resources


def resource_label(item) -> str:
    source, resource = item
    return f"{source}:{resource['kind']}/{resource['metadata']['name']}"


def of_kind(resources: list[dict], kind: str) -> list[dict]:
    return [resource for resource in resources if resource["kind"] == kind]


def containers(resource: dict) -> list[dict]:
    return resource["spec"]["template"]["spec"]["containers"]


def test_every_manifest_file_is_part_of_a_kustomization_or_applied_alone():
    used = set(STANDALONE)
    for directory in KUSTOMIZATIONS:
        spec = yaml.safe_load((directory / kustomize.KUSTOMIZATION).read_text())
        used |= {directory / entry for entry in spec.get("resources", [])}
        used |= {directory / name for g in spec.get("configMapGenerator", []) for name in g["files"]}
    files = {p for p in MANIFESTS.rglob("*.yaml") if p.name != kustomize.KUSTOMIZATION}
    assert files <= used, f"not referenced anywhere: {sorted(map(str, files - used))}"


def is_custom(resource: dict) -> bool:
    return (resource["apiVersion"], resource["kind"]) in CUSTOM_KINDS


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "item", [item for item in every_resource() if not is_custom(item[1])], ids=resource_label
)
def test_core_resources_validate_against_the_kubernetes_schema(item, version):
    kubernetes_validate.validate(item[1], version, strict=True)


def test_every_kind_is_either_core_or_known_custom():
    for _, resource in every_resource():
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSIONS[-1], strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert is_custom(resource), f"{resource['kind']} has no schema and no checks"


def test_the_schema_check_refuses_a_misspelled_field():
    deployment = copy.deepcopy(of_kind(rendered(MANIFESTS / "base"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_rendering_matches_kubectl_kustomize_where_installed(directory):
    """The renderer here stands in for kustomize on machines without it; where kustomize or
    kubectl is installed, their output must be the same resources."""
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    theirs = [doc for doc in yaml.safe_load_all(output) if doc]

    def canonical(docs: list[dict]) -> list[str]:
        return sorted(json.dumps(doc, sort_keys=True) for doc in docs)

    assert canonical(rendered(directory)) == canonical(theirs)


def config_maps_with_envoy_configs() -> list[tuple[str, str]]:
    found = []
    for directory in KUSTOMIZATIONS:
        for config_map in of_kind(rendered(directory), "ConfigMap"):
            label = f"{directory.relative_to(MANIFESTS)}:{config_map['metadata']['name']}"
            found += [(label, text) for key, text in config_map["data"].items() if key == "envoy.yaml"]
    return found


@pytest.mark.parametrize("label,text", config_maps_with_envoy_configs(), ids=lambda v: v if ":" in v else "")
def test_the_envoy_config_in_each_config_map_validates(tmp_path, label, text):
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, f"{label}:\n{result.stdout}{result.stderr}"
    assert "llm_edge: filter config accepted" in result.stdout + result.stderr


def test_there_are_config_maps_to_validate():
    assert len(config_maps_with_envoy_configs()) >= 2


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_deployments_run_the_pinned_image_and_mount_their_config(directory):
    resources = rendered(directory)
    config_maps = {r["metadata"]["name"] for r in of_kind(resources, "ConfigMap")}
    for deployment in of_kind(resources, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in containers(deployment):
            assert container["image"] == IMAGE
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"] == {"path": "/ready", "port": "admin"}
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for volume in pod.get("volumes", []):
            assert volume["configMap"]["name"] in config_maps, volume


def envoy_gateway() -> list[dict]:
    return rendered(MANIFESTS / "envoy-gateway")


def test_envoy_gateway_runs_the_llm_edge_image_and_registers_its_module():
    (proxy,) = of_kind(envoy_gateway(), "EnvoyProxy")
    assert proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["image"] == IMAGE
    (module,) = proxy["spec"]["dynamicModules"]
    assert module["source"] == {"type": "Local", "local": {"path": MODULE_PATH}}
    assert MODULE_PATH.rsplit("/", 1)[0] in (REPO / "Dockerfile").read_text()


def test_envoy_gateway_references_resolve():
    resources = envoy_gateway()
    (proxy,) = of_kind(resources, "EnvoyProxy")
    (gateway_class,) = of_kind(resources, "GatewayClass")
    assert gateway_class["spec"]["parametersRef"]["name"] == proxy["metadata"]["name"]
    gateways = {g["metadata"]["name"]: g for g in of_kind(resources, "Gateway")}
    services = {s["metadata"]["name"]: s for s in of_kind(resources, "Service")}
    for gateway in gateways.values():
        assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    routes = {r["metadata"]["name"]: r for r in of_kind(resources, "HTTPRoute")}
    for route in routes.values():
        assert {p["name"] for p in route["spec"]["parentRefs"]} <= gateways.keys()
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                ports = {p["port"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"] in ports
    registered = {m["name"] for m in proxy["spec"]["dynamicModules"]}
    for policy in of_kind(resources, "EnvoyExtensionPolicy"):
        assert {t["name"] for t in policy["spec"]["targetRefs"]} <= routes.keys()
        assert {m["name"] for m in policy["spec"]["dynamicModule"]} <= registered


def test_the_extension_policy_config_is_one_llm_edge_accepts(tmp_path):
    """Envoy Gateway hands `config` to the module as JSON in a StringValue, with `filterName`
    as its filter_name: the same module validates it here."""
    (policy,) = of_kind(envoy_gateway(), "EnvoyExtensionPolicy")
    (module,) = policy["spec"]["dynamicModule"]
    assert module["filterName"] == "llm_edge"
    config = render_config(MOCK_CONFIG, tmp_path / "envoy.yaml", json.dumps(module["config"]))
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "llm_edge: filter config accepted" in result.stdout + result.stderr
