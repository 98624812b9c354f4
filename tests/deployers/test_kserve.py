"""The KServe deployer's candidate → production flow against a stand-in for the Kubernetes API.

No API server can run here. The stand-in answers like ``kubernetes.client.CustomObjectsApi``: the
same method names and arguments, ``ApiException`` with 404/409, objects as dicts with
``metadata.generation`` bumped on every change, and a status in the shape KServe's controller writes
(``status.url``, ``status.conditions[type=Ready]``, ``status.observedGeneration``), reached one
poll after each change (as a rollout takes time).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from ai_how.config.loader import load_config
from ai_how.deployers import kserve
from ai_how.deployers.base import DeployError, DeployRequest
from ai_how.deployers.kserve import KServeDeployer
from ai_how.layout import Layout
from tests.conftest import EXAMPLE


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), what patch_namespaced_custom_object sends for a dict body."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class CustomObjectsStandIn:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.reads_until_ready: dict[tuple[str, str, str], int] = {}

    def _changed(self, key: tuple[str, str, str]) -> None:
        self.objects[key]["metadata"]["generation"] = self.objects[key]["metadata"].get("generation", 0) + 1
        self.reads_until_ready[key] = 1

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = (namespace, plural, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = copy.deepcopy(body) | {"status": {}}
        self._changed(key)
        return self.objects[key]

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = (namespace, plural, name)
        if key not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        merge(self.objects[key], body)
        self._changed(key)
        return self.objects[key]

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        key = (namespace, plural, name)
        if key not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        obj = self.objects[key]
        if self.reads_until_ready.get(key, 0) > 0:
            self.reads_until_ready[key] -= 1
        elif plural == "inferenceservices":  # the controller caught up: the new spec is Ready
            obj["status"] = {
                "url": f"http://{name}.{namespace}.example.com",
                "observedGeneration": obj["metadata"]["generation"],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        return copy.deepcopy(obj)

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        if self.objects.pop((namespace, plural, name), None) is None:
            raise ApiException(status=404, reason="NotFound")
        return {"status": "Success"}

    def isvc(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(("production", "inferenceservices", name))


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[KServeDeployer, CustomObjectsStandIn]:
    monkeypatch.setattr(kserve, "POLL_S", 0.01)
    api = CustomObjectsStandIn()
    return KServeDeployer(load_config(EXAMPLE, env={}).config, Layout(tmp_path), api=api), api


def request(version: int) -> DeployRequest:
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
    )


def version_of(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else obj["metadata"]["annotations"]["ai-how.io/mlflow-model-version"]


def test_a_version_is_a_candidate_until_promoted_then_replaces_production(
    cluster: tuple[KServeDeployer, CustomObjectsStandIn],
) -> None:
    deployer, api = cluster
    first = deployer.deploy(request(1))
    assert first.endpoint == "http://digits-v1.production.example.com"
    assert api.isvc("digits") is None and deployer.endpoint("digits") is None
    assert ("production", "servingruntimes", "ai-how-runtime") in api.objects

    promoted = deployer.promote("digits", 1)
    assert promoted.endpoint == "http://digits.production.example.com"
    assert version_of(api.isvc("digits")) == "1" and api.isvc("digits-v1") is None

    deployer.deploy(request(2))
    assert version_of(api.isvc("digits")) == "1"  # production untouched while v2 is a candidate
    assert version_of(api.isvc("digits-v2")) == "2"
    assert api.isvc("digits-v2")["spec"]["predictor"]["model"]["storageUri"] == "s3://models/digits/v2/"

    deployer.promote("digits", 2)
    production = api.isvc("digits")
    assert version_of(production) == "2" and production["metadata"]["generation"] == 2  # an update: a rollout
    assert production["spec"]["predictor"]["model"]["storageUri"] == "s3://models/digits/v2/"
    assert api.isvc("digits-v2") is None
    # A resumed promote (the switch was done, the alias was not) finds the work done.
    assert deployer.promote("digits", 2).endpoint == "http://digits.production.example.com"


def test_a_discarded_candidate_leaves_production_and_cannot_be_promoted(
    cluster: tuple[KServeDeployer, CustomObjectsStandIn],
) -> None:
    deployer, api = cluster
    deployer.deploy(request(1))
    deployer.promote("digits", 1)
    deployer.deploy(request(2))
    assert deployer.serves("digits", 2)
    assert deployer.discard("digits", 2)
    assert not deployer.serves("digits", 2) and deployer.serves("digits", 1)
    assert api.isvc("digits-v2") is None and version_of(api.isvc("digits")) == "1"
    with pytest.raises(DeployError, match="no candidate InferenceService production/digits-v2"):
        deployer.promote("digits", 2)
    assert not deployer.discard("digits", 2)  # already gone: nothing else is touched
