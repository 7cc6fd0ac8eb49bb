"""Renders the project's kustomizations as `kubectl kustomize` does, for the part of kustomize they use.

No kustomize binary comes from a registry this project may use (the fresh machine has only Rust
and Python), so the static checks render the manifests here. The renderer is strict: a
kustomization key or generator option it does not implement is an error, never silently ignored,
and where `kubectl` or `kustomize` is installed, a test compares its output with theirs.

Implemented: `resources` (files and directories), `configMapGenerator` (`files`, `behavior`
create or replace, name suffixed with kustomize's content hash) and the rewriting of pod volumes
that name a generated ConfigMap.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KUSTOMIZATION = "kustomization.yaml"
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator"}
SUPPORTED_GENERATOR_KEYS = {"name", "namespace", "files", "behavior"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


@dataclass
class Rendering:
    """Resources in output order, and which ConfigMaps were generated (and so get a hash suffix)."""

    resources: list[dict] = field(default_factory=list)
    generated: set[tuple[str, str]] = field(default_factory=set)


def resource_id(resource: dict) -> tuple[str, str, str]:
    metadata = resource["metadata"]
    return resource["kind"], metadata.get("namespace", ""), metadata["name"]


def build(directory: Path) -> list[dict]:
    """The resources `kubectl kustomize <directory>` prints, in its order."""
    rendering = _accumulate(directory)
    return _apply_name_hashes(rendering)


def _accumulate(directory: Path) -> Rendering:
    kustomization = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"{directory / KUSTOMIZATION}: unsupported keys {sorted(unknown)}")
    rendering = Rendering()
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            nested = _accumulate(path)
            _add(rendering, nested.resources, directory)
            rendering.generated |= nested.generated
        else:
            _add(rendering, [doc for doc in yaml.safe_load_all(path.read_text()) if doc], directory)
    for generator in kustomization.get("configMapGenerator", []):
        _generate_config_map(rendering, generator, directory)
    return rendering


def _add(rendering: Rendering, resources: list[dict], directory: Path) -> None:
    known = {resource_id(resource) for resource in rendering.resources}
    for resource in resources:
        if resource_id(resource) in known:
            raise ValueError(f"{directory}: {resource_id(resource)} is included twice")
        known.add(resource_id(resource))
        rendering.resources.append(resource)


def _generate_config_map(rendering: Rendering, generator: dict, directory: Path) -> None:
    unknown = set(generator) - SUPPORTED_GENERATOR_KEYS
    if unknown:
        raise ValueError(f"{directory}: unsupported configMapGenerator keys {sorted(unknown)}")
    metadata = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {Path(name).name: (directory / name).read_text() for name in generator["files"]},
    }
    key = (metadata.get("namespace", ""), metadata["name"])
    position = next(
        (i for i, r in enumerate(rendering.resources) if resource_id(r) == ("ConfigMap", *key)), None
    )
    behavior = generator.get("behavior", "create")
    if behavior == "create":
        if position is not None:
            raise ValueError(f"{directory}: ConfigMap {key} already exists; use behavior: replace")
        rendering.resources.append(config_map)
    elif behavior == "replace":
        if position is None:
            raise ValueError(f"{directory}: no ConfigMap {key} to replace")
        rendering.resources[position] = config_map
    else:
        raise ValueError(f"{directory}: unsupported configMapGenerator behavior {behavior!r}")
    rendering.generated.add(key)


def config_map_hash(config_map: dict) -> str:
    """kustomize's name suffix: the SHA-256 of the ConfigMap's canonical JSON, its first ten hex
    digits with the vowel-like ones swapped for consonants so the suffix never spells a word.

    kustomize 5 looks the name up by a path its lookup never matches, so the name it hashes is
    always empty; only the data decides the suffix."""
    canonical = {"data": config_map["data"], "kind": "ConfigMap", "name": ""}
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoding/json escapes these for safe embedding in HTML; the hash is over its bytes.
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        encoded = encoded.replace(raw, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _apply_name_hashes(rendering: Rendering) -> list[dict]:
    renamed: dict[tuple[str, str], str] = {}
    for resource in rendering.resources:
        kind, namespace, name = resource_id(resource)
        if kind == "ConfigMap" and (namespace, name) in rendering.generated:
            renamed[(namespace, name)] = f"{name}-{config_map_hash(resource)}"
            resource["metadata"]["name"] = renamed[(namespace, name)]
    for resource in rendering.resources:
        if resource["kind"] not in POD_TEMPLATE_KINDS:
            continue
        namespace = resource["metadata"].get("namespace", "")
        for volume in resource["spec"]["template"]["spec"].get("volumes", []):
            config_map = volume.get("configMap")
            if config_map and (namespace, config_map["name"]) in renamed:
                config_map["name"] = renamed[(namespace, config_map["name"])]
    return rendering.resources
