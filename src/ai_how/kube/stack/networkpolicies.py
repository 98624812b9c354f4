"""NetworkPolicies that let in only the flows the stack needs (ingress; egress stays open):

* stack namespace: nothing by default; MLflow <- ingress controller, models namespace, monitoring;
  PostgreSQL <- MLflow; object store <- MLflow, the bucket Job, the models namespace (KServe's
  storage-initializer), the cloud network (the workstation syncs models over S3), metrics <- monitoring.
* models namespace: model pods <- ingress controller, monitoring, and each other.
"""

from __future__ import annotations

from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.kube.stack import objectstore
from ai_how.kube.stack.common import (
    COMPONENT_LABEL,
    MLFLOW_PORT,
    POSTGRES_PORT,
    POSTGRES_SERVICE,
    ingress_namespace,
    labels,
    stack,
)

COMPONENT = "networkpolicies"


def _namespaces(*names: str) -> dict[str, Any]:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(set(names))}
            ]
        }
    }


def _policy(namespace: str, name: str, pods: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(COMPONENT)},
        "spec": {
            "podSelector": {"matchLabels": pods} if pods else {},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def _ports(*ports: int | str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def networkpolicies(config: ClusterConfig) -> list[dict[str, Any]]:
    kube = stack(config)
    ns, models, monitoring = kube.namespace, config.mlops.serving.namespace, kube.monitoring_namespace
    mlflow_pods = {COMPONENT_LABEL: "mlflow"}
    store = objectstore.provider(config)
    store_sources: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": mlflow_pods}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": objectstore.BUCKET_JOB}}},
        _namespaces(models),
    ]
    cloud = config.clusters.cloud
    if cloud is not None and cloud.network is not None:
        store_sources.append({"ipBlock": {"cidr": str(cloud.network.subnet)}})
    store_rules: list[dict[str, Any]] = [{"from": store_sources, "ports": _ports(store.port)}]
    if store.name == "seaweedfs":
        store_rules.append({"from": [_namespaces(monitoring)], "ports": _ports(objectstore.METRICS_PORT)})
    return [
        _policy(ns, "default-deny-ingress", {}, []),
        _policy(
            ns,
            "mlflow",
            mlflow_pods,
            [{"from": [_namespaces(ingress_namespace(), models, monitoring)], "ports": _ports(MLFLOW_PORT)}],
        ),
        _policy(
            ns,
            "postgresql",
            {"app.kubernetes.io/name": POSTGRES_SERVICE},
            [{"from": [{"podSelector": {"matchLabels": mlflow_pods}}], "ports": _ports(POSTGRES_PORT)}],
        ),
        _policy(ns, "objectstore", {"app.kubernetes.io/name": store.name}, store_rules),
        _policy(
            models,
            "models",
            {},
            [{"from": [_namespaces(ingress_namespace(), monitoring), {"podSelector": {}}]}],
        ),
    ]
