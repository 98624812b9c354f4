"""The cloud cluster's Kubernetes settings are checked before any Kubespray playbook runs: each bad
case is refused with its config path and the fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.checking import check_file
from ai_how.config.findings import Severity

Writer = Callable[[dict[str, Any]], Path]


def k8s(data: dict[str, Any]) -> dict[str, Any]:
    return data["clusters"]["cloud"]["kubernetes_config"]  # type: ignore[no-any-return]


def errors(data: dict[str, Any], write_config: Writer) -> list[Any]:
    result = check_file(write_config(data))
    return [f for f in result.findings if f.severity is Severity.ERROR]


def only(data: dict[str, Any], write_config: Writer) -> Any:
    found = errors(data, write_config)
    assert len(found) == 1, [(f.where, f.message) for f in found]
    return found[0]


def test_the_seeds_kubernetes_1_28_is_refused_naming_what_v2_31_installs(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    k8s(example_data)["version"] = "1.28"
    finding = only(example_data, write_config)
    assert finding.where.startswith("clusters.cloud.kubernetes_config.version")
    assert "cannot install Kubernetes 1.28" in finding.message and "1.33.0-1.35.4" in finding.message
    assert "1.35.4" in finding.fix


def test_a_minor_version_resolves_to_an_installable_patch(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    k8s(example_data)["version"] = "1.34"
    assert errors(example_data, write_config) == []


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (("runtime_version",), "1.6.20", "k8s.containerd_version"),
        (("networking", "cni_version"), "3.27", "k8s.calico_version"),
    ],
)
def test_uninstallable_containerd_and_calico(
    example_data: dict[str, Any], write_config: Writer, key: tuple[str, ...], value: str, code: str
) -> None:
    target = k8s(example_data)
    for part in key[:-1]:
        target = target[part]
    target[key[-1]] = value
    finding = only(example_data, write_config)
    assert finding.code == code and value in finding.message and "e.g." in finding.fix


def test_unknown_kubespray_release_without_commit(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["kubespray"] = {"version": "v2.29.0"}
    finding = only(example_data, write_config)
    assert finding.code == "k8s.kubespray_unknown" and "v2.31.0" in finding.fix


def test_a_wrong_commit_for_a_known_release(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["kubespray"] = {"version": "v2.31.0", "commit": "0" * 40}
    assert only(example_data, write_config).code == "k8s.kubespray_commit"


def test_pod_and_service_subnets_overlap(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["networking"]["service_cidr"] = "10.244.128.0/20"
    found = errors(example_data, write_config)
    assert any("pod CIDR" in f.message and "service CIDR" in f.message for f in found)


def test_node_prefix_must_split_the_pod_cidr(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["node_prefix"] = 16
    finding = only(example_data, write_config)
    assert finding.code == "k8s.node_prefix" and finding.path[-1] == "node_prefix"


def test_a_boolean_written_as_a_string(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["helm"] = "yes"
    finding = only(example_data, write_config)
    assert finding.where.startswith("clusters.cloud.kubernetes_config.helm")
    assert "true or false" in finding.message and "without quotes" in finding.fix


def test_unknown_cni(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["networking"]["cni"] = "weave"
    finding = only(example_data, write_config)
    assert finding.where.startswith("clusters.cloud.kubernetes_config.networking.cni")
    assert "calico" in finding.fix


def test_label_syntax(example_data: dict[str, Any], write_config: Writer) -> None:
    example_data["clusters"]["cloud"]["worker_nodes"]["gpu"][0]["node_labels"]["gpu type!"] = "a6000"
    finding = only(example_data, write_config)
    assert finding.code == "k8s.label_syntax" and "gpu type!" in finding.where


def test_taint_syntax(example_data: dict[str, Any], write_config: Writer) -> None:
    example_data["clusters"]["cloud"]["worker_nodes"]["gpu"][0]["node_taints"][0]["value"] = "-bad-"
    assert only(example_data, write_config).code == "k8s.taint_syntax"


def test_even_number_of_etcd_members(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["etcd_nodes"] = ["control-plane", "cpu-worker"]
    finding = only(example_data, write_config)
    assert finding.code == "k8s.etcd_even" and "odd" in finding.fix


def test_etcd_on_unknown_vms(example_data: dict[str, Any], write_config: Writer) -> None:
    k8s(example_data)["etcd_nodes"] = ["control-plane", "cpu-worker", "nowhere"]
    assert only(example_data, write_config).code == "k8s.etcd_unknown"
