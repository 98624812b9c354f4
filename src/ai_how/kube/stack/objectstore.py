"""The in-cluster S3 server: SeaweedFS (default) or MinIO, one pod with its volume, its Service, and a Job
that creates the config's buckets (idempotent). Credentials come from the S3 Secret by reference."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.kube.stack.common import labels, placement, resources, s3_secret, service_host, stack

COMPONENT = "objectstore"
BUCKET_JOB = "objectstore-buckets"
SPEC_HASH_ANNOTATION = "ai-how.io/spec-sha256"
METRICS_PORT = 9327


@dataclass(frozen=True)
class Provider:
    name: str  # also the Service and StatefulSet name
    image: str
    port: int
    data_dir: str


# Pinned images. MinIO's community edition stopped publishing images in 2025-10 (repository archived).
PROVIDERS = {
    "seaweedfs": Provider("seaweedfs", "chrislusf/seaweedfs:4.47", 8333, "/data"),
    "minio": Provider("minio", "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z", 9000, "/data"),
}

# SeaweedFS reads its S3 identities from a file: written at start from the Secret's keys (env), never
# stored anywhere else. One identity with every action.
_SEAWEEDFS_START = """\
umask 077
printf '{"identities":[{"name":"ai-how","credentials":[{"accessKey":"%s","secretKey":"%s"}],\
"actions":["Admin","Read","List","Tagging","Write"]}]}' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" \
> /tmp/s3.json
exec weed server -dir=/data -ip.bind=0.0.0.0 -master.volumeSizeLimitMB=1024 -volume.max=0 \
-s3 -s3.port=8333 -s3.config=/tmp/s3.json -metricsPort=9327
"""

_BUCKETS_SCRIPT = """\
until aws s3api list-buckets > /dev/null; do echo "waiting for $AWS_ENDPOINT_URL"; sleep 3; done
for bucket in $BUCKETS; do
  if aws s3api head-bucket --bucket "$bucket" 2> /dev/null; then echo "bucket $bucket exists"
  else aws s3api create-bucket --bucket "$bucket" && echo "bucket $bucket created"; fi
done
"""


def provider(config: ClusterConfig) -> Provider:
    chosen = PROVIDERS[stack(config).object_store]
    image = stack(config).object_store_image
    return Provider(chosen.name, image, chosen.port, chosen.data_dir) if image else chosen


def in_cluster_endpoint(config: ClusterConfig) -> str:
    store = provider(config)
    return f"http://{service_host(config, store.name)}:{store.port}"


def _secret_env(config: ClusterConfig, names: tuple[str, str]) -> list[dict[str, Any]]:
    secret = s3_secret(config)
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for env, key in zip(names, keys, strict=True)
    ]


def _container(config: ClusterConfig, store: Provider) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [{"name": "s3", "containerPort": store.port, "protocol": "TCP"}]
    host_port = stack(config).object_store_host_port
    if host_port:
        ports[0]["hostPort"] = host_port
    if store.name == "seaweedfs":
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
        command = ["/bin/sh", "-ec", _SEAWEEDFS_START]
        env = _secret_env(config, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    else:
        command = ["minio", "server", store.data_dir, "--address", f":{store.port}"]
        env = _secret_env(config, ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"))
    return {
        "name": store.name,
        "image": store.image,
        "command": command,
        "env": env,
        "ports": ports,
        "readinessProbe": {"tcpSocket": {"port": store.port}, "periodSeconds": 5, "failureThreshold": 6},
        "resources": resources(config, COMPONENT),
        "volumeMounts": [{"name": "data", "mountPath": store.data_dir}],
    }


def _statefulset(config: ClusterConfig, store: Provider) -> dict[str, Any]:
    cloud = config.clusters.cloud
    storage_class = cloud.kubernetes_config.storage.default_class if cloud else None
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": stack(config).object_store_size}},
    }
    if storage_class:
        claim_spec["storageClassName"] = storage_class
    selector = labels(COMPONENT, store.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": store.name, "namespace": stack(config).namespace, "labels": selector},
        "spec": {
            "serviceName": store.name,
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {**placement(config, COMPONENT), "containers": [_container(config, store)]},
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": selector}, "spec": claim_spec}],
        },
    }


def _service(config: ClusterConfig, store: Provider) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [{"name": "s3", "port": store.port, "targetPort": "s3", "protocol": "TCP"}]
    if store.name == "seaweedfs":
        ports.append({"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": store.name,
            "namespace": stack(config).namespace,
            "labels": labels(COMPONENT, store.name),
        },
        "spec": {"selector": labels(COMPONENT, store.name), "ports": ports},
    }


def bucket_job(config: ClusterConfig) -> dict[str, Any]:
    """The Job creating the buckets over S3 (any S3 server); its spec hash is an annotation, so `up`
    replaces a finished Job whose spec changed (a Job's template cannot be updated)."""
    buckets = config.mlops.object_store.buckets
    names = " ".join(dict.fromkeys([buckets.artifacts, buckets.models, buckets.datasets]))
    env = [
        *_secret_env(config, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
        {"name": "AWS_ENDPOINT_URL", "value": in_cluster_endpoint(config)},
        {"name": "AWS_DEFAULT_REGION", "value": config.mlops.object_store.region},
        {"name": "BUCKETS", "value": names},
    ]
    job_labels = labels(COMPONENT, BUCKET_JOB)
    spec = {
        "backoffLimit": 6,
        "template": {
            "metadata": {"labels": job_labels},
            "spec": {
                **placement(config, COMPONENT),
                "restartPolicy": "OnFailure",
                "containers": [
                    {
                        "name": "create-buckets",
                        "image": stack(config).bucket_job_image,
                        "command": ["/bin/sh", "-ec", _BUCKETS_SCRIPT],
                        "env": env,
                        "resources": resources(config, "bucket_job"),
                    }
                ],
            },
        },
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": BUCKET_JOB,
            "namespace": stack(config).namespace,
            "labels": job_labels,
            "annotations": {SPEC_HASH_ANNOTATION: digest},
        },
        "spec": spec,
    }


def objectstore_objects(config: ClusterConfig) -> list[dict[str, Any]]:
    store = provider(config)
    return [_service(config, store), _statefulset(config, store), bucket_job(config)]


def objectstore_monitors(config: ClusterConfig) -> list[dict[str, Any]]:
    """A ServiceMonitor for SeaweedFS's metrics (MinIO's need a bearer token: none)."""
    store = provider(config)
    if store.name != "seaweedfs":
        return []
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {
                "name": store.name,
                "namespace": stack(config).namespace,
                "labels": labels("monitors", store.name),
            },
            "spec": {
                "selector": {"matchLabels": labels(COMPONENT, store.name)},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            },
        }
    ]
