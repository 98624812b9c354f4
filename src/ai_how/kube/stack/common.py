"""What every stack component shares: labels, names, placement on nodes, resources and endpoints."""

from __future__ import annotations

from typing import Any

from ai_how.config.models import ClusterConfig, KubeStack, Resources, WorkerNode
from ai_how.kube.ingress import INGRESS_NGINX
from ai_how.kube.kserve import MANAGED_BY, s3_secret_name

COMPONENT_LABEL = "ai-how.io/stack-component"
DEFAULT_POSTGRES_SECRET = "ai-how-postgresql"
POSTGRES_SERVICE = "postgresql"
POSTGRES_PORT = 5432
MLFLOW_RELEASE = "mlflow"
MLFLOW_PORT = 5000

# A worker's `services:` entry names the piece it runs; minio and seaweedfs both mean the object store.
SERVICE_ALIASES = {"objectstore": ("seaweedfs", "minio", "objectstore", "s3")}

# Modest requests/limits for one workstation, unless mlops.kubernetes.resources says otherwise.
DEFAULT_RESOURCES: dict[str, Resources] = {
    "objectstore": Resources(
        requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "2", "memory": "2Gi"}
    ),
    "postgresql": Resources(
        requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "2", "memory": "2Gi"}
    ),
    "mlflow": Resources(requests={"cpu": "250m", "memory": "1Gi"}, limits={"cpu": "2", "memory": "4Gi"}),
    "bucket_job": Resources(
        requests={"cpu": "50m", "memory": "64Mi"}, limits={"cpu": "500m", "memory": "256Mi"}
    ),
}


def stack(config: ClusterConfig) -> KubeStack:
    return config.mlops.kubernetes


def labels(component: str, name: str | None = None) -> dict[str, str]:
    """Labels on every object ai-how renders: `down` removes only objects that carry them."""
    result = {**MANAGED_BY, COMPONENT_LABEL: component}
    if name:
        result["app.kubernetes.io/name"] = name
    return result


def resources(config: ClusterConfig, service: str) -> dict[str, dict[str, str]]:
    chosen = stack(config).resources.get(service) or DEFAULT_RESOURCES[service]  # type: ignore[call-overload]
    return {"requests": dict(chosen.requests), "limits": dict(chosen.limits)}


def _workers_running(config: ClusterConfig, service: str) -> list[WorkerNode]:
    cloud = config.clusters.cloud
    names = SERVICE_ALIASES.get(service, (service,))
    workers = [*cloud.worker_nodes.cpu, *cloud.worker_nodes.gpu] if cloud else []
    return [w for w in workers if any(n in w.services for n in names)]


def node_selector(config: ClusterConfig, service: str) -> dict[str, str]:
    """Where a service runs: the worker whose ``services`` lists it (by host name), the labels every such
    worker shares when several do, or anywhere (no selector) when none does."""
    workers = _workers_running(config, service)
    if len(workers) == 1 and workers[0].name:
        return {"kubernetes.io/hostname": workers[0].name}
    if not workers:
        return {}
    shared = dict(workers[0].node_labels)
    for worker in workers[1:]:
        shared = {k: v for k, v in shared.items() if worker.node_labels.get(k) == v}
    return shared


def tolerations(config: ClusterConfig, service: str) -> list[dict[str, str]]:
    """Tolerations for the taints of the workers a service is placed on (none for untainted workers)."""
    result: list[dict[str, str]] = []
    for worker in _workers_running(config, service):
        for taint in worker.node_taints:
            toleration = {"key": taint.key, "operator": "Exists", "effect": taint.effect}
            if taint.value:
                toleration = {
                    "key": taint.key,
                    "operator": "Equal",
                    "value": taint.value,
                    "effect": taint.effect,
                }
            if toleration not in result:
                result.append(toleration)
    return result


def placement(config: ClusterConfig, service: str) -> dict[str, Any]:
    """The pod-spec fields that place a service (nodeSelector, tolerations), only those that are set."""
    spec: dict[str, Any] = {}
    if selector := node_selector(config, service):
        spec["nodeSelector"] = selector
    if toleration_list := tolerations(config, service):
        spec["tolerations"] = toleration_list
    return spec


def dns_domain(config: ClusterConfig) -> str:
    cloud = config.clusters.cloud
    return cloud.kubernetes_config.networking.dns_domain if cloud else "cluster.local"


def service_host(config: ClusterConfig, service: str) -> str:
    return f"{service}.{stack(config).namespace}.svc.{dns_domain(config)}"


def postgres_secret_name(config: ClusterConfig) -> str:
    return config.mlops.postgresql.kubernetes_secret or DEFAULT_POSTGRES_SECRET


def s3_secret(config: ClusterConfig) -> str:
    """The S3 credentials Secret (keys AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), in the stack's namespace
    and, for KServe's storage-initializer, in the models namespace."""
    return s3_secret_name(config)


def ingress_namespace() -> str:
    return INGRESS_NGINX.namespace


def kubernetes_version(config: ClusterConfig) -> str:
    cloud = config.clusters.cloud
    return cloud.kubernetes_config.version if cloud else "1.35"
