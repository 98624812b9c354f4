"""PostgreSQL for MLflow's tracking store: a one-pod StatefulSet with its volume on the configured storage
class, the password from a Secret (by reference), a `pg_isready` readiness probe, and its Service."""

from __future__ import annotations

from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.kube.stack.common import (
    POSTGRES_PORT,
    POSTGRES_SERVICE,
    labels,
    placement,
    postgres_secret_name,
    resources,
    stack,
)

COMPONENT = "postgresql"
# Keys of the database Secret (MLflow's chart reads the same ones: backendStore.existingDatabaseSecret).
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
DATA_DIR = "/var/lib/postgresql/data"


def _container(config: ClusterConfig) -> dict[str, Any]:
    pg = config.mlops.postgresql
    secret = postgres_secret_name(config)
    ready = ["/bin/sh", "-c", 'pg_isready -h 127.0.0.1 -p 5432 -U "$POSTGRES_USER" -d "$POSTGRES_DB"']
    return {
        "name": "postgresql",
        "image": stack(config).postgresql_image,
        "env": [
            {"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": USERNAME_KEY}}},
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}},
            },
            {"name": "POSTGRES_DB", "value": pg.database},
            {"name": "PGDATA", "value": f"{DATA_DIR}/pgdata"},
        ],
        "ports": [{"name": "postgresql", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ready}, "periodSeconds": 5, "failureThreshold": 6},
        "livenessProbe": {"exec": {"command": ready}, "initialDelaySeconds": 30, "periodSeconds": 15},
        "resources": resources(config, COMPONENT),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }


def postgresql_objects(config: ClusterConfig) -> list[dict[str, Any]]:
    namespace = stack(config).namespace
    selector = labels(COMPONENT, POSTGRES_SERVICE)
    cloud = config.clusters.cloud
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": stack(config).postgresql_size}},
    }
    if cloud is not None:
        claim_spec["storageClassName"] = cloud.kubernetes_config.storage.default_class
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": POSTGRES_SERVICE, "namespace": namespace, "labels": selector},
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "postgresql", "port": POSTGRES_PORT, "targetPort": "postgresql", "protocol": "TCP"}
            ],
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": POSTGRES_SERVICE, "namespace": namespace, "labels": selector},
        "spec": {
            "serviceName": POSTGRES_SERVICE,
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    **placement(config, COMPONENT),
                    "securityContext": {"fsGroup": 999},
                    "containers": [_container(config)],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": selector}, "spec": claim_spec}],
        },
    }
    return [service, statefulset]
