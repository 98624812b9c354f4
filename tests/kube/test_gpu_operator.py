"""GPU Operator values: every key exists in the chart's v26.7.0 defaults; driver, time slicing, tolerations, helm argv."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.loader import ConfigInvalidError, load_config
from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube.gpu_operator import (
    GPU_OPERATOR_CHART_VERSION,
    GPU_OPERATOR_REPO,
    gpu_operator_install_command,
    gpu_operator_values,
    time_slicing_configmap,
)
from ai_how.kube.helm import helm_install_command
from tests.conftest import REPO

CHART_DEFAULTS = (
    REPO.parent / "shared" / "schemas" / "charts" / f"gpu-operator-{GPU_OPERATOR_CHART_VERSION}.values.yaml"
)
# Keys under which the chart takes any map or list (its defaults are `{}`/`[]` or free-form).
OPEN_KEYS = {"nodeSelector", "tolerations", "data", "labels", "annotations", "extraObjects", "env", "args"}

Config = Callable[..., ClusterConfig]


@pytest.fixture
def chart_defaults() -> dict[str, Any]:
    if not CHART_DEFAULTS.is_file():
        pytest.skip(f"the chart's defaults are not here: {CHART_DEFAULTS} (shared schemas not checked out)")
    data: dict[str, Any] = yaml.safe_load(CHART_DEFAULTS.read_text())
    return data


@pytest.fixture
def config(example_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]) -> Config:
    """The example config with the gpu_operator (and optionally the GPU workers' taints) changed."""

    def make(taints: list[dict[str, str]] | None = None, **operator: Any) -> ClusterConfig:
        data = copy.deepcopy(example_data)
        cloud = data["clusters"]["cloud"]
        gpu_operator = cloud["kubernetes_config"]["gpu_operator"]
        for key, value in operator.items():
            if isinstance(value, dict):
                gpu_operator.setdefault(key, {}).update(value)
            elif value is None:
                gpu_operator.pop(key, None)
            else:
                gpu_operator[key] = value
        if taints is not None:
            for worker in cloud["worker_nodes"]["gpu"]:
                worker["node_taints"] = taints
        return load_config(write_config(data)).config

    return make


def key_paths_missing(values: dict[str, Any], defaults: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Every key path set in ``values`` that the chart's defaults do not have (or have with another type)."""
    for key, value in values.items():
        here = (*path, key)
        if not isinstance(defaults, dict) or key not in defaults:
            yield ".".join(here)
            continue
        default = defaults[key]
        if key in OPEN_KEYS or default == {}:
            continue  # the chart leaves this map/list open
        if isinstance(value, dict):
            yield from key_paths_missing(value, default, here)
        elif default is not None and type(value) is not type(default):
            yield f"{'.'.join(here)} ({type(value).__name__}, the chart's default is {type(default).__name__})"


@pytest.mark.parametrize("driver_in_image", [True, False], ids=["driver-in-image", "operator-driver"])
@pytest.mark.parametrize("time_slicing", [True, False], ids=["time-slicing", "whole-gpus"])
def test_every_key_exists_in_the_chart_defaults(
    chart_defaults: dict[str, Any], config: Config, driver_in_image: bool, time_slicing: bool
) -> None:
    cfg = config(
        device_plugin={"time_slicing": time_slicing, "mig_strategy": "single"},
        taints=[{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}],
    )
    values = gpu_operator_values(cfg, driver_in_image=driver_in_image)
    assert list(key_paths_missing(values, chart_defaults)) == []
    assert ("config" in values["devicePlugin"]) is time_slicing  # both branches were walked


def test_the_checker_catches_a_key_the_chart_lacks(chart_defaults: dict[str, Any]) -> None:
    bad = {
        "dcgmExporter": {"port": 5555, "serviceMonitor": {"enabled": "yes"}},
        "devicePlugin": {"enabled": True},
    }
    assert list(key_paths_missing(bad, chart_defaults)) == [
        "dcgmExporter.port",
        "dcgmExporter.serviceMonitor.enabled (str, the chart's default is bool)",
    ]


def test_driver_off_when_the_image_has_it(config: Config) -> None:
    cfg = config()
    assert gpu_operator_values(cfg, driver_in_image=True)["driver"] == {"enabled": False}
    assert gpu_operator_values(cfg, driver_in_image=False)["driver"] == {
        "enabled": True,
        "version": "535.129.03",
    }
    # Without a driver_version the chart's own default driver is used.
    assert gpu_operator_values(config(driver_version=None), driver_in_image=False)["driver"] == {
        "enabled": True
    }


def test_components_follow_the_config(config: Config) -> None:
    values = gpu_operator_values(config(), driver_in_image=True)
    assert values["toolkit"] == {"enabled": True}
    assert values["devicePlugin"] == {"enabled": True}
    assert values["mig"] == {"strategy": "none"}
    assert values["gfd"] == {"enabled": True}
    assert values["dcgmExporter"] == {"enabled": True, "serviceMonitor": {"enabled": True}}
    assert "5555" not in yaml.safe_dump(values)  # dcgm.port has no chart key: nothing is emitted for it

    off = gpu_operator_values(
        config(gfd={"enabled": False}, dcgm={"enabled": False}, device_plugin={"mig_strategy": "mixed"}),
        driver_in_image=True,
    )
    assert off["gfd"] == {"enabled": False} and off["mig"] == {"strategy": "mixed"}
    assert off["dcgmExporter"] == {"enabled": False, "serviceMonitor": {"enabled": False}}
    # No Prometheus Operator in the cluster: the DCGM exporter runs without its ServiceMonitor.
    bare = gpu_operator_values(config(), driver_in_image=True, service_monitor=False)
    assert bare["dcgmExporter"] == {"enabled": True, "serviceMonitor": {"enabled": False}}


def test_time_slicing_configmap_is_referenced_and_rendered_by_the_chart(config: Config) -> None:
    cfg = config(device_plugin={"time_slicing": True, "time_slicing_replicas": 8})
    configmap = time_slicing_configmap(cfg)
    assert configmap is not None
    plugin_config = yaml.safe_load(configmap["data"]["any"])
    assert plugin_config == {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 8}]}},
    }
    values = gpu_operator_values(cfg, driver_in_image=True)
    # The chart's plugin_config.yaml renders a ConfigMap named config.name from config.data when create is
    # true; config.default picks the entry every GPU node uses.
    assert values["devicePlugin"]["config"] == {
        "create": True,
        "name": configmap["metadata"]["name"],
        "default": "any",
        "data": configmap["data"],
    }
    assert configmap["metadata"]["namespace"] == "gpu-operator"


def test_no_time_slicing_no_configmap(config: Config) -> None:
    cfg = config()
    assert time_slicing_configmap(cfg) is None
    assert "config" not in gpu_operator_values(cfg, driver_in_image=True)["devicePlugin"]


def test_time_slicing_configmap_is_valid_kubernetes(config: Config) -> None:
    configmap = time_slicing_configmap(config(device_plugin={"time_slicing": True}))
    assert configmap is not None
    try:
        import kubernetes_validate
    except ModuleNotFoundError:
        kubernetes_validate = None
    if kubernetes_validate is not None:
        kubernetes_validate.validate(configmap, "1.35", strict=True)
    # By hand (kubernetes-validate is not installed in this venv): the core/v1 ConfigMap fields.
    assert configmap["apiVersion"] == "v1" and configmap["kind"] == "ConfigMap"
    assert set(configmap) <= {"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"}
    dns_subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    assert (
        re.match(dns_subdomain, configmap["metadata"]["name"]) and len(configmap["metadata"]["name"]) <= 253
    )
    assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", configmap["metadata"]["namespace"])
    for key, value in configmap["data"].items():
        assert re.match(r"^[-._a-zA-Z0-9]+$", key) and isinstance(value, str)
    assert len(yaml.safe_dump(configmap).encode()) < 1024 * 1024


def test_replicas_below_two_are_rejected_with_the_path(
    example_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    example_data["clusters"]["cloud"]["kubernetes_config"]["gpu_operator"]["device_plugin"][
        "time_slicing_replicas"
    ] = 1
    with pytest.raises(ConfigInvalidError) as caught:
        load_config(write_config(example_data))
    assert "clusters.cloud.kubernetes_config.gpu_operator.device_plugin.time_slicing_replicas" in str(
        caught.value
    )


def test_gpu_worker_taints_are_tolerated_keeping_the_chart_defaults(config: Config) -> None:
    # The example's taint (nvidia.com/gpu=present:NoSchedule) is covered by the chart's own toleration.
    values = gpu_operator_values(config(), driver_in_image=True)
    assert values["daemonsets"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]

    cfg = config(
        taints=[
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "maintenance", "effect": "NoSchedule"},
        ]
    )
    values = gpu_operator_values(cfg, driver_in_image=True)
    added = [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"},
        {"key": "maintenance", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert values["daemonsets"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        *added,
    ]
    # node-feature-discovery must run on the tainted GPU nodes too: the operator places its pods by NFD's labels.
    assert values["node-feature-discovery"]["worker"]["tolerations"] == [
        {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Equal",
            "value": "",
            "effect": "NoSchedule",
        },
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        *added,
    ]


def test_another_chart_version_is_refused_with_the_path(config: Config) -> None:
    assert gpu_operator_values(config(version="26.7.0"), driver_in_image=True)  # with or without the v
    with pytest.raises(AiHowError) as caught:
        gpu_operator_values(config(version="v25.3.0"), driver_in_image=True)
    assert str(caught.value).startswith(
        "clusters.cloud.kubernetes_config.gpu_operator.version: 'v25.3.0' is not"
    )
    assert caught.value.fix and "v26.7.0" in caught.value.fix


def test_helm_install_argv() -> None:
    argv = helm_install_command(
        "gpu-operator",
        "gpu-operator",
        "v26.7.0",
        "gpu-operator",
        "/tmp/ai-how/gpu-operator.yaml",
        GPU_OPERATOR_REPO,
    )
    assert argv == [
        "helm", "upgrade", "--install", "gpu-operator", "gpu-operator",
        "--repo", "https://helm.ngc.nvidia.com/nvidia", "--version", "v26.7.0",
        "--namespace", "gpu-operator", "--create-namespace", "--values", "/tmp/ai-how/gpu-operator.yaml",
        "--wait", "--atomic", "--timeout", "15m",
    ]  # fmt: skip
    pinned = gpu_operator_install_command("/tmp/v.yaml", kubeconfig="/etc/kubernetes/admin.conf")
    assert pinned[:5] == ["helm", "upgrade", "--install", "gpu-operator", "gpu-operator"]
    assert pinned[pinned.index("--version") + 1] == GPU_OPERATOR_CHART_VERSION
    assert pinned[-2:] == ["--kubeconfig", "/etc/kubernetes/admin.conf"]
    assert all(isinstance(a, str) and a for a in pinned)
