"""KServe objects rendered from the config: one consistent scaler, GPU tolerations, S3 credentials through a
ServiceAccount, the two LLM runtimes; every variant validated against KServe v0.20's CRD schemas."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube import kserve
from tests.conftest import EXAMPLE, REPO

CRD_DIR = REPO.parent / "shared" / "schemas"


@pytest.fixture
def config() -> ClusterConfig:
    return load_config(EXAMPLE, env={}).config


def model(kind: str = "classifier", name: str = "smollm-production") -> kserve.ModelVersion:
    return kserve.ModelVersion(
        name=name,
        version=3,
        storage_uri=f"s3://models/{name}/v3",
        kind=kind,
        run_id="r1",
        tracking_uri="http://mlflow:5000",
        manifest_sha256="ab" * 32,
    )


def with_serving(config: ClusterConfig, **changes: Any) -> ClusterConfig:
    changed = config.model_copy(deep=True)
    for key, value in changes.items():
        target: Any = changed.mlops.serving
        *path, last = key.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return changed


def test_isvc_carries_version_storage_resources_and_mlflow_annotations(config: ClusterConfig) -> None:
    manifest = kserve.inference_service(config, model())
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("smollm-production", "production")
    annotations = meta["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["ai-how.io/mlflow-model-name"] == "smollm-production"
    assert annotations["ai-how.io/mlflow-model-version"] == "3"
    assert annotations["ai-how.io/mlflow-run"] == "r1"
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    predictor = manifest["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "s3-models"
    spec = predictor["model"]
    assert spec["storageUri"] == "s3://models/smollm-production/v3/"  # trailing slash: a directory
    assert spec["runtime"] == kserve.RUNTIME_NAME and spec["args"] == ["--name=smollm-production"]
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_gpu_models_tolerate_the_gpu_workers_taints(config: ClusterConfig) -> None:
    predictor = kserve.inference_service(config, model())["spec"]["predictor"]
    assert predictor["tolerations"] == [
        {"key": "nvidia.com/gpu", "effect": "NoSchedule", "operator": "Equal", "value": "present"}
    ]
    cpu_only = with_serving(config, resources__requests={"cpu": "1"}, resources__limits={"cpu": "2"})
    assert "tolerations" not in kserve.inference_service(cpu_only, model())["spec"]["predictor"]


def test_hpa_scales_on_one_resource_metric_and_nothing_else(config: ClusterConfig) -> None:
    manifest = kserve.inference_service(with_serving(config, autoscaling__metric="memory"), model())
    predictor = manifest["spec"]["predictor"]
    assert manifest["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 5)
    assert predictor["autoScaling"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]
    assert "scaleMetric" not in predictor and "scaleTarget" not in predictor  # no contradicting settings


def test_keda_scales_on_the_servers_in_flight_requests(config: ClusterConfig) -> None:
    manifest = kserve.inference_service(with_serving(config, autoscaling__autoscaler="keda"), model())
    assert manifest["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = manifest["spec"]["predictor"]["autoScaling"]["metrics"]
    external = metric["external"]
    assert metric["type"] == "External" and external["metric"]["backend"] == "prometheus"
    assert external["metric"]["query"] == (
        'sum(ai_how_requests_in_flight{namespace="production", pod=~"smollm-production-predictor-.*"})'
    )
    assert external["target"] == {"type": "AverageValue", "averageValue": "10"}


def test_fixed_replicas_when_autoscaling_is_off_and_knative_uses_its_own_scaler(
    config: ClusterConfig,
) -> None:
    fixed = kserve.inference_service(with_serving(config, autoscaling__enabled=False), model())
    predictor = fixed["spec"]["predictor"]
    assert fixed["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "none"
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 1 and "autoScaling" not in predictor

    knative = kserve.inference_service(
        with_serving(config, deployment_mode="Knative"), model(), canary_percent=10
    )
    predictor = knative["spec"]["predictor"]
    assert "serving.kserve.io/autoscalerClass" not in knative["metadata"]["annotations"]
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 10)
    assert predictor["canaryTrafficPercent"] == 10


def test_a_canary_needs_knative_mode(config: ClusterConfig) -> None:
    with pytest.raises(AiHowError, match="canary traffic splitting needs KServe's Knative mode"):
        kserve.inference_service(config, model(), canary_percent=10)


def test_llms_can_run_on_kserves_huggingfaceserver(config: ClusterConfig) -> None:
    hf = with_serving(config, llm_runtime="huggingface", huggingface_backend="vllm")
    spec = kserve.inference_service(hf, model("llm"))["spec"]["predictor"]["model"]
    assert spec["modelFormat"] == {"name": "huggingface"} and spec["runtime"] == "kserve-huggingfaceserver"
    assert spec["args"] == ["--model_name=smollm-production", "--backend=vllm"]
    # A classifier stays on ai-how's runtime whatever llm_runtime says.
    assert (
        kserve.inference_service(hf, model())["spec"]["predictor"]["model"]["runtime"] == kserve.RUNTIME_NAME
    )


@pytest.mark.parametrize("name", ["Digits", "1model", "model_name", "x" * 46, "ends-"])
def test_model_names_must_be_kubernetes_names(config: ClusterConfig, name: str) -> None:
    with pytest.raises(AiHowError, match="cannot name a KServe InferenceService"):
        kserve.inference_service(config, model(name=name))


def test_the_s3_secret_comes_from_the_environment_only(config: ClusterConfig) -> None:
    assert kserve.s3_secret(config, {}) is None
    secret = kserve.s3_secret(config, {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "shh"})
    assert secret is not None and secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "shh",
    }
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-region": "us-east-1",
        "serving.kserve.io/s3-endpoint": "seaweedfs.mlops.svc.cluster.local:8333",  # in_cluster_endpoint
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-verifyssl": "0",
    }
    account = kserve.service_account(config)
    assert account["secrets"] == [{"name": "s3-credentials"}] and "stringData" not in account


def test_the_runtime_runs_the_ai_how_server_as_non_root(config: ClusterConfig) -> None:
    runtime = kserve.serving_runtime(with_serving(config, image="registry.local/ai-how/model-server:0.1"))
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == "registry.local/ai-how/model-server:0.1"
    assert container["command"] == ["python", "-m", "ai_how.serving.server"]
    assert "--model-uri=file:///mnt/models" in container["args"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert not any(arg.startswith("--kv-cache-gb") for arg in container["args"])  # the server's default
    (shared,) = kserve.serving_runtime(with_serving(config, kv_cache_gb=6.5))["spec"]["containers"]
    assert "--kv-cache-gb=6.5" in shared["args"]


def crd_dir() -> Path:
    if not (CRD_DIR / "kserve-v0.20.0").is_dir():
        pytest.skip(f"KServe's CRD schemas are not here: {CRD_DIR} (shared schemas not checked out)")
    return CRD_DIR


VARIANTS = {
    "hpa": {},
    "keda": {"autoscaling__autoscaler": "keda"},
    "fixed": {"autoscaling__enabled": False},
    "knative": {"deployment_mode": "Knative"},
    "huggingface": {"llm_runtime": "huggingface", "huggingface_backend": "vllm"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_validates_against_kserves_crds(config: ClusterConfig, variant: str) -> None:
    from ai_how.kube.validation import validate_objects

    changed = with_serving(config, **VARIANTS[variant])
    objects = [
        kserve.serving_runtime(changed),
        kserve.service_account(changed),
        kserve.inference_service(changed, model("llm"), canary_percent=10 if variant == "knative" else None),
        kserve.inference_service(changed, model("classifier", "digits-cnn")),
    ]
    secret = kserve.s3_secret(changed, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert secret is not None
    assert validate_objects([*objects, secret], kubernetes_version="1.35", crd_dir=crd_dir()) == []


@pytest.mark.parametrize(
    ("typo", "where"),
    [
        (("spec", "predictor", "minReplica"), "minReplica"),
        (("spec", "predictor", "model", "storageURI"), "storageURI"),
    ],
)
def test_a_typo_in_an_inference_service_fails_validation(
    config: ClusterConfig, typo: tuple[str, ...], where: str
) -> None:
    from ai_how.kube.validation import validate_objects

    manifest = kserve.inference_service(config, model())
    target = manifest
    for key in typo[:-1]:
        target = target[key]
    target[typo[-1]] = 2 if where == "minReplica" else "s3://models/x/"
    problems = validate_objects([manifest], kubernetes_version="1.35", crd_dir=crd_dir())
    assert len(problems) == 1 and where in problems[0] and "smollm-production" in problems[0]


@pytest.mark.live
def test_manifests_pass_a_server_side_dry_run(config: ClusterConfig) -> None:
    """Runs against the cluster KUBECONFIG names (with KServe installed); skipped without one."""
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: no Kubernetes cluster with KServe (no API server can run here)")
    from ai_how.kube.client import connect, object_path

    namespace = os.environ.get("AI_HOW_TEST_NAMESPACE", "default")
    live = with_serving(config, namespace=namespace)
    with connect(Path(os.environ["KUBECONFIG"]), None, 30.0) as api:
        for obj in (kserve.serving_runtime(live), kserve.inference_service(live, model())):
            api.request(
                "PATCH",
                object_path(obj),
                body=obj,
                query=[("fieldManager", "ai-how"), ("dryRun", "All")],
                content_type="application/apply-patch+yaml",
            )
