"""The KServe deployer's candidate → production flow, through the real ``kubernetes`` client over HTTP.

No API server can run here, so the client talks to the stand-in in tests/kube/standin_api.py: a real HTTP
server answering in the API's shapes (server-side apply, 404/409 Status objects, ``metadata.generation``
bumped on spec changes, events by field selector). A stand-in for KServe's controller writes each
InferenceService's status the way KServe does (``status.url``, ``conditions[type=Ready]``,
``observedGeneration``, ``modelStatus``) one poll after each change, as a rollout takes time, and tests
script the failures a cluster shows (unschedulable GPU pods, image pulls, a failing storage-initializer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.deployers.base import DeployError, DeployRequest
from ai_how.deployers.kserve import KServeDeployer
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from tests.conftest import EXAMPLE
from tests.kube.standin_api import StandinApi, standin_api

NS = "production"
ENV = {"AWS_ACCESS_KEY_ID": "key-id-marker", "AWS_SECRET_ACCESS_KEY": "secret-marker"}


def kserve_controller(api: StandinApi, obj: dict[str, Any]) -> None:
    """Ready one GET after each change, like KServe once the new pods pass their readiness probe."""
    meta, status = obj["metadata"], obj.setdefault("status", {})
    if status.get("seenGeneration") != meta["generation"]:
        status["seenGeneration"] = meta["generation"]  # the rollout starts now
        status["conditions"] = [{"type": "Ready", "status": "False", "reason": "RevisionMissing"}]
        return
    status.update(
        url=f"http://{meta['name']}.{meta['namespace']}.example.com",
        observedGeneration=meta["generation"],
        conditions=[{"type": "Ready", "status": "True"}],
    )


def never_ready(api: StandinApi, obj: dict[str, Any]) -> None:
    obj["status"] = {
        "observedGeneration": obj["metadata"]["generation"],
        "conditions": [
            {"type": "PredictorReady", "status": "False", "reason": "PodsNotReady"},
            {"type": "Ready", "status": "False", "reason": "PredictorNotReady"},
        ],
    }


@pytest.fixture
def config() -> ClusterConfig:
    return load_config(EXAMPLE, env={}).config


@pytest.fixture
def cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: ClusterConfig
) -> Iterator[Callable[..., tuple[KServeDeployer, StandinApi]]]:
    """Start a stand-in API with the given ISVC controller; a deployer pointed at it."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    stack: list[Any] = []

    def start(
        controller: Callable[[StandinApi, dict[str, Any]], None] = kserve_controller,
        cfg: ClusterConfig = config,
    ) -> tuple[KServeDeployer, StandinApi]:
        context = standin_api(pods=[], controllers={"inferenceservices": controller})
        api = context.__enter__()
        stack.append(context)
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        return KServeDeployer(cfg, Layout(tmp_path / "state"), kubeconfig=kubeconfig, poll_s=0.01), api

    yield start
    for context in stack:
        context.__exit__(None, None, None)


def request(version: int, kind: str = "classifier") -> DeployRequest:
    return DeployRequest(
        model_name="digits",
        version=version,
        storage_uri=f"s3://models/digits/v{version}",
        config_path=EXAMPLE,
        run_dir=Path("/nonexistent"),
        log_path=Path("/nonexistent/log"),
        run_id=f"run-{version}",
        tracking_uri="http://mlflow:5000",
        manifest_sha256="ab" * 32,
        kind=kind,
    )


def version_of(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else obj["metadata"]["annotations"]["ai-how.io/mlflow-model-version"]


def test_first_deploy_applies_what_the_predictor_needs_then_promotes(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]],
) -> None:
    deployer, api = cluster()
    first = deployer.deploy(request(1))
    assert first.endpoint == "http://digits-v1.production.example.com"
    assert api.find("inferenceservices", "digits", NS) is None and deployer.endpoint("digits") is None
    # Everything went through server-side apply as field manager ai-how.
    assert api.applies and {a["field_manager"] for a in api.applies} == {"ai-how"}
    secret = api.find("secrets", "s3-credentials", NS)
    assert secret is not None and secret["stringData"]["AWS_ACCESS_KEY_ID"] == "key-id-marker"
    assert (
        secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
        == "seaweedfs.mlops.svc.cluster.local:8333"
    )
    account = api.find("serviceaccounts", "s3-models", NS)
    assert account is not None and account["secrets"] == [{"name": "s3-credentials"}]
    assert api.find("servingruntimes", "ai-how-runtime", NS) is not None
    candidate = api.find("inferenceservices", "digits-v1", NS)
    assert candidate is not None and candidate["spec"]["predictor"]["serviceAccountName"] == "s3-models"

    promoted = deployer.promote("digits", 1)
    assert promoted.endpoint == "http://digits.production.example.com"
    assert version_of(api.find("inferenceservices", "digits", NS)) == "1"
    assert api.find("inferenceservices", "digits-v1", NS) is None


def test_an_update_rolls_production_and_a_rollback_restores_the_recorded_spec(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]], config: ClusterConfig
) -> None:
    deployer, api = cluster()
    deployer.deploy(request(1))
    deployer.promote("digits", 1)
    v1_spec = api.find("inferenceservices", "digits", NS)["spec"]  # type: ignore[index]

    # v2 is rendered from a config that changed meanwhile (a new image, more replicas).
    changed = config.model_copy(deep=True)
    changed.mlops.serving.image = "registry.local/ai-how/model-server:2"
    changed.mlops.serving.autoscaling.max_replicas = 3
    deployer.config = changed
    deployer.deploy(request(2))
    assert version_of(api.find("inferenceservices", "digits", NS)) == "1"  # untouched while v2 is a candidate
    deployer.promote("digits", 2)
    production = api.find("inferenceservices", "digits", NS)
    assert production is not None and version_of(production) == "2"
    assert production["metadata"]["generation"] == 2  # the same object updated: a rolling update
    assert production["spec"]["predictor"]["maxReplicas"] == 3

    # Rolling back to v1 brings back exactly the spec v1 served with, not one rendered from today's config.
    deployer.deploy(request(1))
    deployer.promote("digits", 1)
    restored = api.find("inferenceservices", "digits", NS)
    assert restored is not None and version_of(restored) == "1"
    assert restored["spec"] == v1_spec and restored["spec"]["predictor"]["maxReplicas"] == 5


def test_unschedulable_gpu_pods_time_out_naming_the_scheduler_event(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]], config: ClusterConfig
) -> None:
    quick = config.model_copy(deep=True)
    quick.mlops.serving.ready_timeout_s = 1
    deployer, api = cluster(never_ready, quick)
    pod = api.put(
        "api/v1",
        NS,
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "digits-v1-predictor-7d9f-abcde",
                "labels": {"serving.kserve.io/inferenceservice": "digits-v1"},
            },
            "spec": {"containers": [{"name": "kserve-container"}]},
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            },
        },
    )
    api.add_event(pod, "FailedScheduling", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    with pytest.raises(DeployError) as failed:
        deployer.deploy(request(1))
    message = failed.value.message
    assert "not Ready after 1 s" in message
    assert "Insufficient nvidia.com/gpu" in message and "PredictorNotReady" in message
    assert "ready_timeout_s" in (failed.value.fix or "")


@pytest.mark.parametrize(
    ("container_status", "shown"),
    [
        (
            {
                "name": "kserve-container",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}},
            },
            "ImagePullBackOff: pull access denied",
        ),
        (
            {
                "name": "storage-initializer",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}},
            },
            "Init:CrashLoopBackOff",
        ),
    ],
)
def test_a_stuck_pod_fails_the_deploy_at_once_with_its_state(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]],
    container_status: dict[str, Any],
    shown: str,
) -> None:
    deployer, api = cluster(never_ready)  # the default 600 s timeout: the test ends only by failing fast
    init = container_status["name"] == "storage-initializer"
    api.put(
        "api/v1",
        NS,
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "digits-v1-predictor-1",
                "labels": {"serving.kserve.io/inferenceservice": "digits-v1"},
            },
            "spec": {"containers": [{"name": "kserve-container"}]},
            "status": {
                "phase": "Pending",
                "initContainerStatuses" if init else "containerStatuses": [container_status],
            },
        },
    )
    with pytest.raises(DeployError, match="cannot become Ready") as failed:
        deployer.deploy(request(1))
    assert shown in failed.value.message and "digits-v1-predictor-1" in failed.value.message


def test_a_model_that_fails_to_load_is_reported_from_kserves_model_status(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]],
) -> None:
    def failed_load(api: StandinApi, obj: dict[str, Any]) -> None:
        never_ready(api, obj)
        obj["status"]["modelStatus"] = {
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "manifest sha256 mismatch"},
        }

    deployer, _ = cluster(failed_load)
    with pytest.raises(
        DeployError, match=r"BlockedByFailedLoad \(ModelLoadFailed: manifest sha256 mismatch\)"
    ):
        deployer.deploy(request(1))


def test_missing_credentials_and_no_secret_say_which_variables_to_export(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer, api = cluster()
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(DeployError, match="s3-credentials does not exist") as failed:
        deployer.deploy(request(1))
    assert "AWS_SECRET_ACCESS_KEY" in (failed.value.fix or "")
    assert api.find("inferenceservices", "digits-v1", NS) is None  # nothing half-deployed
    # A Secret created by the cluster's admin is enough.
    api.put(
        "api/v1",
        NS,
        "secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"}},
    )
    assert deployer.deploy(request(1)).version == 1


def test_a_file_store_uri_is_refused_before_anything_is_applied(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]],
) -> None:
    deployer, api = cluster()
    local = request(1)
    local.storage_uri = "file:///var/lib/ai-how/objects/digits/v1"
    with pytest.raises(DeployError, match="storage-initializer reads object stores"):
        deployer.deploy(local)
    assert not api.applies


def test_a_discarded_candidate_leaves_production_and_cannot_be_promoted(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]],
) -> None:
    deployer, api = cluster()
    deployer.deploy(request(1))
    deployer.promote("digits", 1)
    deployer.deploy(request(2))
    assert deployer.serves("digits", 2)
    assert deployer.discard("digits", 2)
    assert not deployer.serves("digits", 2) and deployer.serves("digits", 1)
    assert version_of(api.find("inferenceservices", "digits", NS)) == "1"
    with pytest.raises(DeployError, match="no candidate InferenceService production/digits-v2"):
        deployer.promote("digits", 2)
    assert not deployer.discard("digits", 2)  # already gone: nothing else is touched


def test_no_kubeconfig_says_how_to_get_one(
    tmp_path: Path, config: ClusterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    deployer = KServeDeployer(config, Layout(tmp_path))
    with pytest.raises(DeployError, match="no kubeconfig was found") as failed:
        deployer.deploy(request(1))
    assert "ai-how cloud deploy" in (failed.value.fix or "")


def test_a_knative_canary_splits_traffic_then_completes(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]], config: ClusterConfig
) -> None:
    knative = config.model_copy(deep=True)
    knative.mlops.serving.deployment_mode = "Knative"
    deployer, api = cluster(kserve_controller, knative)
    with pytest.raises(DeployError, match="no production InferenceService to split traffic with"):
        deployer.canary(request(1), 20)
    deployer.deploy(request(1))
    deployer.promote("digits", 1)

    split = deployer.canary(request(2), 20)
    assert split.details["role"] == "canary 20%"
    production = api.find("inferenceservices", "digits", NS)
    assert production is not None and version_of(production) == "2"
    assert production["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert api.find("inferenceservices", "digits-v2", NS) is None  # the same object: KServe splits revisions

    deployer.canary(request(2), 100)
    production = api.find("inferenceservices", "digits", NS)
    assert production is not None and "canaryTrafficPercent" not in production["spec"]["predictor"]
    assert deployer.recorded_spec("digits", 2) is not None  # now production's spec, for a later rollback


def test_a_canary_in_standard_mode_names_the_setting(
    cluster: Callable[..., tuple[KServeDeployer, StandinApi]],
) -> None:
    deployer, api = cluster()
    with pytest.raises(AiHowError, match="canary traffic splitting needs KServe's Knative mode"):
        deployer.canary(request(2), 20)
    assert not api.applies
