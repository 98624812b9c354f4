"""KServe manifests rendered from the config, and a live server-side dry run when a cluster is reachable."""

from __future__ import annotations

import os

import pytest

from ai_how.config.loader import load_config
from ai_how.serving import isvc
from tests.conftest import EXAMPLE


def rendered() -> dict:  # type: ignore[type-arg]
    config = load_config(EXAMPLE, env={}).config
    return isvc.inference_service(
        config,
        "smollm-production",
        3,
        "s3://models/smollm-production/v3",
        run_id="r1",
        tracking_uri="http://mlflow:5000",
        manifest_sha256="ab" * 32,
    )


def test_inference_service_carries_version_storage_resources_and_scaling() -> None:
    manifest = rendered()
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("smollm-production", "production")
    assert meta["annotations"]["ai-how.io/mlflow-model-name"] == "smollm-production"
    assert meta["annotations"]["ai-how.io/mlflow-model-version"] == "3"
    predictor = manifest["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 5)
    assert predictor["serviceAccountName"] == "s3-models"
    model = predictor["model"]
    assert model["storageUri"] == "s3://models/smollm-production/v3/"  # trailing slash: a directory
    assert model["runtime"] == isvc.RUNTIME_NAME and "name" not in model
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_serving_runtime_runs_the_ai_how_server_on_mnt_models() -> None:
    runtime = isvc.serving_runtime("registry.local/ai-how/model-server:0.1")
    container = runtime["spec"]["containers"][0]
    assert container["image"] == "registry.local/ai-how/model-server:0.1"
    assert "--model-uri=file:///mnt/models" in container["args"] and "--host=0.0.0.0" in container["args"]
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == isvc.MODEL_FORMAT


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="needs a Kubernetes cluster with KServe (set KUBECONFIG)"
)
def test_manifests_pass_a_server_side_dry_run() -> None:
    from kubernetes import client, config

    config.load_kube_config()
    api = client.CustomObjectsApi()
    manifest = rendered()
    namespace = os.environ.get("AI_HOW_TEST_NAMESPACE", "default")
    manifest["metadata"]["namespace"] = namespace
    api.create_namespaced_custom_object(
        "serving.kserve.io",
        "v1alpha1",
        namespace,
        "servingruntimes",
        isvc.serving_runtime("ai-how/model-server:test"),
        dry_run="All",
    )
    api.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", manifest, dry_run="All"
    )
