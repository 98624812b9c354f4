"""KServe objects for a model version, from the config: ServingRuntime, InferenceService, S3 credentials.

Plain dicts in KServe v0.20's shapes (validated in tests against its CRD schemas), so rendering needs
neither the kserve SDK nor a cluster. One consistent scaler per InferenceService:

* ``Standard`` mode (Deployments; no Knative/Istio): the HPA on CPU or memory utilisation, or KEDA on a
  Prometheus query of the model server's in-flight requests (``autoScaling.metrics``); a fixed replica
  count (autoscaler class ``none``) when autoscaling is off.
* ``Knative`` mode: Knative's own autoscaler on concurrency (``scaleMetric``/``scaleTarget``), and
  ``canaryTrafficPercent`` for canaries.

The S3 Secret carries KServe's endpoint annotations and is listed by the predictor's ServiceAccount;
its keys come from environment variables when it is applied, so it is never rendered to a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ai_how import __version__
from ai_how.config.models import ClusterConfig, Serving, Taint
from ai_how.errors import AiHowError

RUNTIME_NAME = "ai-how-runtime"
MODEL_FORMAT = "ai-how"
HF_RUNTIME_NAME = "kserve-huggingfaceserver"  # the ClusterServingRuntime KServe's chart installs
HF_MODEL_FORMAT = "huggingface"
ANNOTATION_PREFIX = "ai-how.io"
VERSION_ANNOTATION = f"{ANNOTATION_PREFIX}/mlflow-model-version"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ai-how"}
DEFAULT_SERVICE_ACCOUNT = "ai-how-models"
DEFAULT_S3_SECRET = "ai-how-s3"
GPU_RESOURCE = "nvidia.com/gpu"
SERVER_PORT = 8080
# The model server's gauge of requests being served (all routes); KEDA scales on its sum per ISVC.
IN_FLIGHT_METRIC = "ai_how_requests_in_flight"
# Kubernetes names of Services KServe derives from an InferenceService (`<name>-predictor`, ...) must
# stay DNS labels (63 characters); `-predictor` and the candidate's `-v<N>` suffix take their share.
MAX_ISVC_NAME = 45
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1035, as KServe requires


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version as KServe serves it."""

    name: str
    version: int
    storage_uri: str
    kind: str  # "classifier" | "llm"
    run_id: str
    tracking_uri: str
    manifest_sha256: str


def default_image() -> str:
    return f"ai-how/model-server:{__version__}"


def runtime_image(serving: Serving) -> str:
    return serving.image or default_image()


def service_account_name(config: ClusterConfig) -> str:
    return config.mlops.serving.service_account or DEFAULT_SERVICE_ACCOUNT


def s3_secret_name(config: ClusterConfig) -> str:
    return config.mlops.object_store.credentials.kubernetes_secret or DEFAULT_S3_SECRET


def _labels(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**MANAGED_BY, **(extra or {})}


# --------------------------------------------------------------------------- the runtime


def serving_runtime(config: ClusterConfig) -> dict[str, Any]:
    """ai-how's ServingRuntime: ``python -m ai_how.serving.server`` on what the storage-initializer put in
    /mnt/models (verified against its manifest before serving), V1/V2/OpenAI on port 8080."""
    serving = config.mlops.serving
    probe = {"httpGet": {"path": "/v2/health/ready", "port": SERVER_PORT}, "periodSeconds": 5}
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {
            "name": RUNTIME_NAME,
            "namespace": serving.namespace,
            "labels": _labels(),
            "annotations": {
                "prometheus.kserve.io/port": str(SERVER_PORT),
                "prometheus.kserve.io/path": "/metrics",
            },
        },
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "1", "autoSelect": True}],
            "protocolVersions": ["v1", "v2"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": runtime_image(serving),
                    "command": ["python", "-m", "ai_how.serving.server"],
                    # The ISVC appends --name=<model> (KServe appends the ISVC's args to these).
                    "args": [
                        "--model-uri=file:///mnt/models",
                        "--host=0.0.0.0",
                        f"--port={SERVER_PORT}",
                        "--cache-dir=/tmp/ai-how-model-cache",
                        f"--http-workers={serving.http_workers}",
                        *(
                            [f"--kv-cache-gb={serving.kv_cache_gb:g}"]
                            if serving.kv_cache_gb is not None
                            else []
                        ),
                    ],
                    "ports": [{"containerPort": SERVER_PORT, "protocol": "TCP"}],
                    "readinessProbe": probe,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


# --------------------------------------------------------------------------- S3 credentials


def s3_annotations(config: ClusterConfig) -> dict[str, str]:
    """KServe's S3 annotations for the storage-initializer, from the config's object store."""
    store = config.mlops.object_store
    endpoint = store.in_cluster_endpoint or store.endpoint
    annotations = {"serving.kserve.io/s3-region": store.region}
    if endpoint:
        url = urlsplit(endpoint)
        annotations |= {
            "serving.kserve.io/s3-endpoint": url.netloc,
            "serving.kserve.io/s3-usehttps": "1" if url.scheme == "https" else "0",
            "serving.kserve.io/s3-verifyssl": "1" if url.scheme == "https" else "0",
        }
    return annotations


def service_account(config: ClusterConfig) -> dict[str, Any]:
    """The predictor's ServiceAccount, listing the S3 Secret (how KServe finds a model's credentials)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": service_account_name(config),
            "namespace": config.mlops.serving.namespace,
            "labels": _labels(),
        },
        "secrets": [{"name": s3_secret_name(config)}],
    }


def s3_secret(config: ClusterConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The S3 Secret with its keys read from the environment now, or None when they are not set (the
    Secret must then exist already). Only ever sent to the API server, never written to a file."""
    env = os.environ if environ is None else environ
    creds = config.mlops.object_store.credentials
    key_id, secret = env.get(creds.access_key_id_env), env.get(creds.secret_access_key_env)
    if not key_id or not secret:
        return None
    data = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    if creds.session_token_env and env.get(creds.session_token_env):
        data["AWS_SESSION_TOKEN"] = env[creds.session_token_env]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": s3_secret_name(config),
            "namespace": config.mlops.serving.namespace,
            "labels": _labels(),
            "annotations": s3_annotations(config),
        },
        "stringData": data,
    }


# --------------------------------------------------------------------------- the InferenceService


def _gpu_tolerations(config: ClusterConfig) -> list[dict[str, str]]:
    """Tolerations for every taint the config puts on GPU workers (so GPU models may run there)."""
    cloud = config.clusters.cloud
    taints: list[Taint] = []
    for worker in cloud.worker_nodes.gpu if cloud else []:
        taints.extend(t for t in worker.node_taints if t not in taints)
    if not taints:  # what the GPU Operator's and most clusters' GPU nodes carry
        taints = [Taint(key=GPU_RESOURCE, effect="NoSchedule")]
    tolerations = []
    for taint in taints:
        toleration = {"key": taint.key, "effect": taint.effect}
        if taint.value:
            toleration |= {"operator": "Equal", "value": taint.value}
        else:
            toleration["operator"] = "Exists"
        tolerations.append(toleration)
    return tolerations


def wants_gpu(serving: Serving) -> bool:
    return GPU_RESOURCE in serving.resources.requests or GPU_RESOURCE in serving.resources.limits


def _scaling(serving: Serving, name: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The autoscaler annotations and predictor fields: one scaler, consistent with the mode."""
    scaling = serving.autoscaling
    fields: dict[str, Any] = {"minReplicas": scaling.min_replicas}
    if serving.deployment_mode == "Knative":
        fields["maxReplicas"] = scaling.max_replicas if scaling.enabled else scaling.min_replicas
        if scaling.enabled:
            fields |= {"scaleMetric": "concurrency", "scaleTarget": scaling.target_concurrency}
        return {}, fields
    if not scaling.enabled:
        fields["maxReplicas"] = scaling.min_replicas
        return {"serving.kserve.io/autoscalerClass": "none"}, fields
    fields["maxReplicas"] = scaling.max_replicas
    if scaling.autoscaler == "hpa":
        metric = {
            "type": "Resource",
            "resource": {
                "name": scaling.metric,
                "target": {"type": "Utilization", "averageUtilization": scaling.target_utilization},
            },
        }
        return {"serving.kserve.io/autoscalerClass": "hpa"}, fields | {"autoScaling": {"metrics": [metric]}}
    query = f'sum({IN_FLIGHT_METRIC}{{namespace="{serving.namespace}", pod=~"{name}-predictor-.*"}})'
    metric = {
        "type": "External",
        "external": {
            "metric": {"backend": "prometheus", "serverAddress": scaling.prometheus_url, "query": query},
            "target": {"type": "AverageValue", "averageValue": str(scaling.target_concurrency)},
        },
    }
    return {"serving.kserve.io/autoscalerClass": "keda"}, fields | {"autoScaling": {"metrics": [metric]}}


def check_isvc_name(name: str) -> None:
    """InferenceService names are DNS-1035 labels short enough for the objects KServe derives."""
    if not ISVC_NAME.match(name) or len(name) > MAX_ISVC_NAME:
        raise AiHowError(
            f"model name {name!r} cannot name a KServe InferenceService",
            fix=f"use lower-case letters, digits and '-', starting with a letter, at most {MAX_ISVC_NAME} "
            "characters (e.g. digits-cnn)",
        )


def _model_spec(config: ClusterConfig, model: ModelVersion) -> dict[str, Any]:
    serving = config.mlops.serving
    # KServe wants a trailing slash on directory URIs (kserve/kserve#3899).
    uri = model.storage_uri if model.storage_uri.endswith("/") else model.storage_uri + "/"
    resources = {"requests": dict(serving.resources.requests), "limits": dict(serving.resources.limits)}
    if model.kind == "llm" and serving.llm_runtime == "huggingface":
        # KServe's stock LLM runtime (vLLM on GPU nodes): the synced version is an HF directory.
        return {
            "modelFormat": {"name": HF_MODEL_FORMAT},
            "runtime": HF_RUNTIME_NAME,
            "storageUri": uri,
            "args": [f"--model_name={model.name}", f"--backend={serving.huggingface_backend}"],
            "resources": resources,
        }
    return {
        "modelFormat": {"name": MODEL_FORMAT, "version": "1"},
        "runtime": RUNTIME_NAME,
        "storageUri": uri,
        "protocolVersion": "v2",
        "args": [f"--name={model.name}"],
        "resources": resources,
    }


def inference_service(
    config: ClusterConfig, model: ModelVersion, *, name: str | None = None, canary_percent: int | None = None
) -> dict[str, Any]:
    """The InferenceService serving ``model`` (named ``name``, default the model's name)."""
    serving = config.mlops.serving
    name = name or model.name
    check_isvc_name(model.name)
    scaler_annotations, scaling = _scaling(serving, name)
    annotations = {
        "serving.kserve.io/deploymentMode": serving.deployment_mode,
        "serving.kserve.io/enable-prometheus-scraping": "true",
        **scaler_annotations,
        f"{ANNOTATION_PREFIX}/mlflow-model-name": model.name,
        VERSION_ANNOTATION: str(model.version),
        f"{ANNOTATION_PREFIX}/mlflow-tracking-uri": model.tracking_uri,
        f"{ANNOTATION_PREFIX}/mlflow-run": model.run_id,
        f"{ANNOTATION_PREFIX}/manifest-sha256": model.manifest_sha256,
        f"{ANNOTATION_PREFIX}/version": __version__,
    }
    predictor: dict[str, Any] = {
        **scaling,
        "serviceAccountName": service_account_name(config),
        "model": _model_spec(config, model),
    }
    if wants_gpu(serving):
        predictor["tolerations"] = _gpu_tolerations(config)
    if canary_percent is not None:
        if serving.deployment_mode != "Knative":
            raise AiHowError(
                "canary traffic splitting needs KServe's Knative mode",
                fix="set mlops.serving.deployment_mode: Knative (with Knative installed), or deploy without "
                "--canary (Standard mode rolls out with a rolling update)",
            )
        predictor["canaryTrafficPercent"] = canary_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": serving.namespace,
            "labels": _labels({f"{ANNOTATION_PREFIX}/model": model.name}),
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }
