"""KServe manifests for a model version: the ai-how ServingRuntime and the InferenceService.

Built from the ``kserve`` package's V1beta1/V1alpha1 models (camelCase and field names
come from KServe itself). The runtime container runs ``python -m ai_how.serving.server``
on what KServe's storage-initializer downloaded to /mnt/models, verifying its manifest.
"""

from __future__ import annotations

from typing import Any

from ai_how import __version__
from ai_how.config.models import ClusterConfig

RUNTIME_NAME = "ai-how-runtime"
MODEL_FORMAT = "ai-how"
ANNOTATION_PREFIX = "ai-how.io"


def serving_runtime(image: str) -> dict[str, Any]:
    from kserve import V1alpha1ServingRuntime, V1alpha1ServingRuntimeSpec, constants
    from kserve.models import V1alpha1SupportedModelFormat
    from kubernetes import client as k8s
    from kubernetes.client import ApiClient

    runtime = V1alpha1ServingRuntime(
        api_version=constants.KSERVE_V1ALPHA1,
        kind="ServingRuntime",
        metadata=k8s.V1ObjectMeta(name=RUNTIME_NAME, labels={"app.kubernetes.io/managed-by": "ai-how"}),
        spec=V1alpha1ServingRuntimeSpec(
            supported_model_formats=[
                V1alpha1SupportedModelFormat(name=MODEL_FORMAT, version="1", auto_select=True)
            ],
            protocol_versions=["v1", "v2"],
            containers=[
                k8s.V1Container(
                    name="kserve-container",
                    image=image,
                    command=["python", "-m", "ai_how.serving.server"],
                    args=[
                        "--model-uri=file:///mnt/models",
                        "--name={{.Name}}",
                        "--host=0.0.0.0",
                        "--port=8080",
                        "--cache-dir=/tmp/ai-how-model-cache",
                    ],
                )
            ],
        ),
    )
    return ApiClient().sanitize_for_serialization(runtime)  # type: ignore[no-any-return]


def inference_service(
    config: ClusterConfig,
    model_name: str,
    version: int,
    storage_uri: str,
    *,
    run_id: str,
    tracking_uri: str,
    manifest_sha256: str,
) -> dict[str, Any]:
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
        constants,
    )
    from kubernetes import client as k8s
    from kubernetes.client import ApiClient

    serving = config.mlops.serving
    scaling = serving.autoscaling
    annotations = {
        "serving.kserve.io/deploymentMode": "RawDeployment",
        f"{ANNOTATION_PREFIX}/mlflow-model-name": model_name,
        f"{ANNOTATION_PREFIX}/mlflow-model-version": str(version),
        f"{ANNOTATION_PREFIX}/mlflow-tracking-uri": tracking_uri,
        f"{ANNOTATION_PREFIX}/pipeline-run": run_id,
        f"{ANNOTATION_PREFIX}/manifest-sha256": manifest_sha256,
        f"{ANNOTATION_PREFIX}/version": __version__,
    }
    if scaling.enabled:
        annotations["serving.kserve.io/autoscalerClass"] = "hpa"
        annotations["serving.kserve.io/metric"] = "cpu"
    # KServe wants a trailing slash on directory URIs (kserve/kserve#3899).
    uri = storage_uri if storage_uri.endswith("/") else storage_uri + "/"
    predictor = V1beta1PredictorSpec(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas if scaling.enabled else scaling.min_replicas,
        scale_target=scaling.target_concurrency if scaling.enabled else None,
        scale_metric="concurrency" if scaling.enabled else None,
        service_account_name=serving.service_account,
        model=V1beta1ModelSpec(
            model_format=V1beta1ModelFormat(name=MODEL_FORMAT, version="1"),
            runtime=RUNTIME_NAME,
            storage_uri=uri,
            protocol_version="v2",
            resources=k8s.V1ResourceRequirements(
                requests=dict(serving.resources.requests), limits=dict(serving.resources.limits)
            ),
        ),
    )
    isvc = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=k8s.V1ObjectMeta(
            name=model_name,
            namespace=serving.namespace,
            annotations=annotations,
            labels={"app.kubernetes.io/managed-by": "ai-how"},
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )
    data: dict[str, Any] = ApiClient().sanitize_for_serialization(isvc)
    data["spec"]["predictor"]["model"].pop("name", None)  # the client emits name: '' (container default)
    return data
