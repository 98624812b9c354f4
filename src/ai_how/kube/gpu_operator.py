"""Helm values for NVIDIA's GPU Operator chart (pinned v26.7.0) from the config, and the helm command line.

Plain dicts only (the caller writes them as YAML); every key set here exists in the chart's
``values.yaml`` of that version (tests/kube/test_gpu_operator.py checks it against the chart defaults).

- ``driver.enabled`` is false when the VM image already has the NVIDIA driver, else the operator
  builds it (``driver.version`` from ``gpu_operator.driver_version``, or the chart's default).
- Time slicing: the device plugin reads a ConfigMap (``time_slicing_configmap``) named through
  ``devicePlugin.config.name``/``default``. The chart creates it itself from ``devicePlugin.config``
  (``create: true`` + ``data``, its template ``plugin_config.yaml``), so ``helm upgrade --install``
  creates, updates and removes it with the release. The device plugin reads it when it starts: after
  changing the replica count on a running cluster, restart it
  (``kubectl -n gpu-operator rollout restart daemonset/nvidia-device-plugin-daemonset``).
- Placement: the operator places its GPU DaemonSets itself, on nodes that node-feature-discovery
  labels ``nvidia.com/gpu.present=true``; the chart has no node selector for them. What the config
  decides is which taints they tolerate: the GPU workers' ``node_taints`` are added to
  ``daemonsets.tolerations`` and to the NFD worker's tolerations (whose labels the operator needs).
  Helm replaces lists whole, so both lists keep the chart's default entries.
- DCGM exporter: ``dcgmExporter.enabled`` from ``gpu_operator.dcgm.enabled``, its ServiceMonitor
  on request. The chart has no port key for the exporter (the operator serves metrics on 9400) nor for
  the standalone host engine (5555), so ``gpu_operator.dcgm.port`` has nothing to set here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from ai_how.config.models import ClusterConfig, GpuOperator, Taint
from ai_how.errors import AiHowError
from ai_how.kube.helm import HelmChart, chart_install_command

GPU_OPERATOR_CHART = "gpu-operator"
GPU_OPERATOR_CHART_VERSION = "v26.7.0"
GPU_OPERATOR_REPO = "https://helm.ngc.nvidia.com/nvidia"
GPU_OPERATOR_RELEASE = "gpu-operator"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
GPU_RESOURCE = "nvidia.com/gpu"
TIME_SLICING_CONFIGMAP = "time-slicing-config"
TIME_SLICING_KEY = "any"  # the config name inside the ConfigMap; `devicePlugin.config.default` selects it

CONFIG_PATH = "clusters.cloud.kubernetes_config.gpu_operator"

# The chart's default list entries (values.yaml v26.7.0): a list set in our values replaces them.
_DAEMONSET_TOLERATIONS: list[dict[str, str]] = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
]
_NFD_WORKER_TOLERATIONS: list[dict[str, str]] = [
    {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Equal",
        "value": "",
        "effect": "NoSchedule",
    },
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
]


def _operator_config(config: ClusterConfig) -> GpuOperator:
    cloud = config.clusters.cloud
    if cloud is None:
        raise AiHowError(
            "the config has no cloud cluster (clusters.cloud): there is nothing to install the GPU Operator on",
            fix="add clusters.cloud (see config/example-cluster.yaml)",
        )
    operator = cloud.kubernetes_config.gpu_operator
    if operator.version is not None and operator.version.lstrip("v") != GPU_OPERATOR_CHART_VERSION.lstrip(
        "v"
    ):
        raise AiHowError(
            f"{CONFIG_PATH}.version: {operator.version!r} is not the GPU Operator chart ai-how renders values for "
            f"({GPU_OPERATOR_CHART_VERSION})",
            fix=f"set {CONFIG_PATH}.version to {GPU_OPERATOR_CHART_VERSION} or remove it",
        )
    return operator


def _gpu_worker_taints(config: ClusterConfig) -> list[Taint]:
    cloud = config.clusters.cloud
    taints: list[Taint] = []
    for worker in cloud.worker_nodes.gpu if cloud else []:
        for taint in worker.node_taints:
            if all((t.key, t.value, t.effect) != (taint.key, taint.value, taint.effect) for t in taints):
                taints.append(taint)
    return taints


def _tolerations(defaults: Sequence[dict[str, str]], taints: Sequence[Taint]) -> list[dict[str, str]]:
    """The chart's default tolerations plus one per taint they do not already tolerate."""
    result = [dict(t) for t in defaults]
    for taint in taints:
        if any(_tolerates(t, taint) for t in result):
            continue
        toleration = {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}
        if not taint.value:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
        result.append(toleration)
    return result


def _tolerates(toleration: dict[str, str], taint: Taint) -> bool:
    if toleration.get("key") != taint.key or toleration.get("effect", taint.effect) != taint.effect:
        return False
    return toleration.get("operator") == "Exists" or toleration.get("value", "") == taint.value


def time_slicing_configmap(config: ClusterConfig) -> dict[str, Any] | None:
    """The device plugin's time-slicing ConfigMap (as the chart renders it), or None when time slicing is off."""
    plugin = _operator_config(config).device_plugin
    if not plugin.time_slicing:
        return None
    plugin_config = {
        "version": "v1",
        "flags": {"migStrategy": plugin.mig_strategy},
        "sharing": {
            "timeSlicing": {"resources": [{"name": GPU_RESOURCE, "replicas": plugin.time_slicing_replicas}]}
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": TIME_SLICING_CONFIGMAP, "namespace": GPU_OPERATOR_NAMESPACE},
        "data": {TIME_SLICING_KEY: yaml.safe_dump(plugin_config, sort_keys=False)},
    }


def gpu_operator_values(
    config: ClusterConfig, *, driver_in_image: bool, service_monitor: bool = True
) -> dict[str, Any]:
    """Values for the gpu-operator chart v26.7.0.

    ``service_monitor``: create the DCGM exporter's ServiceMonitor. It needs the Prometheus Operator's
    CRDs in the cluster first: with it on and the CRD missing, the operator stops at the DCGM exporter
    state and never deploys GPU feature discovery or the MIG manager ("Couldn't find ServiceMonitor
    CRD" in its log). Pass False when no Prometheus Operator (kube-prometheus-stack) is installed.
    """
    operator = _operator_config(config)
    plugin = operator.device_plugin
    taints = _gpu_worker_taints(config)

    driver: dict[str, Any] = {"enabled": not driver_in_image}
    if not driver_in_image and operator.driver_version:
        driver["version"] = operator.driver_version
    device_plugin: dict[str, Any] = {"enabled": plugin.enabled}
    configmap = time_slicing_configmap(config)
    if configmap is not None:
        # The chart renders exactly this ConfigMap (name, release namespace, data) from these keys.
        device_plugin["config"] = {
            "create": True,
            "name": configmap["metadata"]["name"],
            "default": TIME_SLICING_KEY,
            "data": configmap["data"],
        }

    values: dict[str, Any] = {
        "driver": driver,
        "toolkit": {"enabled": True},
        "devicePlugin": device_plugin,
        "mig": {"strategy": plugin.mig_strategy},
        "gfd": {"enabled": operator.gfd.enabled},
        "dcgmExporter": {
            "enabled": operator.dcgm.enabled,
            "serviceMonitor": {"enabled": operator.dcgm.enabled and service_monitor},
        },
        "daemonsets": {"tolerations": _tolerations(_DAEMONSET_TOLERATIONS, taints)},
        "node-feature-discovery": {"worker": {"tolerations": _tolerations(_NFD_WORKER_TOLERATIONS, taints)}},
    }
    return values


GPU_OPERATOR = HelmChart(
    GPU_OPERATOR_RELEASE,
    GPU_OPERATOR_CHART,
    GPU_OPERATOR_CHART_VERSION,
    GPU_OPERATOR_REPO,
    GPU_OPERATOR_NAMESPACE,
)


def gpu_operator_install_command(values_path: str, *, kubeconfig: str | None = None) -> list[str]:
    """The helm command for the pinned GPU Operator release."""
    return chart_install_command(GPU_OPERATOR, values_path, kubeconfig=kubeconfig)
