"""``ai-how cloud stack up|down|status`` through the real `kubernetes` client against the stand-in API
server (tests/kube/standin_api.py): its controllers report workloads ready as the real ones would.

Helm cannot run here (no binary; on a cluster it runs on the control plane over SSH), so the charts go
through a recording runner that creates what the chart's release would (MLflow's Deployment, KServe's
controller and CRDs) in the stand-in, and removes it again on uninstall.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ai_how.cli.main import app
from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube.client import KubeUnreachableError
from ai_how.kube.helm import HelmChart
from ai_how.kube.stack.apply import down, status, up
from ai_how.kube.stack.objectstore import SPEC_HASH_ANNOTATION
from tests.conftest import EXAMPLE
from tests.kube.standin_api import StandinApi, standin_api

ENV = {
    "AWS_ACCESS_KEY_ID": "stack-key-id",
    "AWS_SECRET_ACCESS_KEY": "stack-secret",
    "MLFLOW_DB_PASSWORD": "db-pw",
}
CRD_PREFIX = "apis/apiextensions.k8s.io/v1"


def _ready_workload(api: StandinApi, obj: dict[str, Any]) -> None:
    """What the Deployment/StatefulSet controllers report once every replica is ready."""
    replicas = obj["spec"].get("replicas", 1)
    obj["status"] = {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "currentRevision": "r1",
        "updateRevision": "r1",
    }


def _complete_job(api: StandinApi, obj: dict[str, Any]) -> None:
    obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


READY = {"statefulsets": _ready_workload, "deployments": _ready_workload, "jobs": _complete_job}


class RecordingHelm:
    """Installs a release as its chart would create it in the stand-in; records the calls."""

    def __init__(self, api: StandinApi) -> None:
        self.api = api
        self.calls: list[str] = []

    def _created(self, chart: HelmChart) -> list[tuple[str, str, str, dict[str, Any]]]:
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}}
        if chart.release == "mlflow":
            return [
                (
                    "apis/apps/v1",
                    chart.namespace,
                    "deployments",
                    {**deployment, "metadata": {"name": "mlflow"}},
                )
            ]
        if chart.release == "kserve":
            meta = {"name": "kserve-controller-manager"}
            return [("apis/apps/v1", chart.namespace, "deployments", {**deployment, "metadata": meta})]
        return [
            (
                "apis/apiextensions.k8s.io/v1",
                "",
                "customresourcedefinitions",
                {"metadata": {"name": "servingruntimes.serving.kserve.io"}},
            )
        ]

    def install(self, chart: HelmChart, values: Mapping[str, Any]) -> None:
        self.calls.append(f"install {chart.namespace}/{chart.release} {chart.version}")
        for prefix, namespace, plural, obj in self._created(chart):
            self.api.put(prefix, namespace, plural, json.loads(json.dumps(obj)))

    def uninstall(self, chart: HelmChart) -> None:
        self.calls.append(f"uninstall {chart.namespace}/{chart.release}")
        for prefix, namespace, plural, obj in self._created(chart):
            self.api.objects.pop((prefix, namespace, plural, obj["metadata"]["name"]), None)


@pytest.fixture
def config() -> ClusterConfig:
    return load_config(EXAMPLE).config


def _with_monitoring_crd(api: StandinApi) -> None:
    api.put(
        CRD_PREFIX,
        "",
        "customresourcedefinitions",
        {"metadata": {"name": "servicemonitors.monitoring.coreos.com"}},
    )


def _kinds_applied(api: StandinApi) -> list[str]:
    """`plural/name` of each server-side apply, in order."""
    return ["/".join(a["path"].rsplit("/", 2)[-2:]) for a in api.applies]


def _up(
    config: ClusterConfig, api: StandinApi, tmp_path: Path, **kwargs: Any
) -> tuple[Any, RecordingHelm, list[str]]:
    helm = RecordingHelm(api)
    lines: list[str] = []
    kwargs.setdefault("environ", ENV)
    kwargs.setdefault("timeout_s", 5)
    rows = up(config, api.kubeconfig(tmp_path / "kc"), helm, progress=lines.append, poll_s=0.02, **kwargs)
    return rows, helm, lines


# --------------------------------------------------------------------------- up


def test_up_applies_in_dependency_order_waits_and_ends_ready(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        rows, helm, lines = _up(config, api, tmp_path)

        assert all(a["field_manager"] == "ai-how" and a["force"] == "true" for a in api.applies)
        applied = _kinds_applied(api)
        assert applied[:3] == ["namespaces/mlops", "namespaces/production", "namespaces/monitoring"]
        assert applied[3:6] == ["secrets/mlflow-db", "secrets/s3-credentials", "secrets/s3-credentials"]
        order = [applied.index(x) for x in (
            "services/seaweedfs", "statefulsets/seaweedfs", "jobs/objectstore-buckets", "statefulsets/postgresql",
            "servingruntimes/ai-how-runtime", "networkpolicies/default-deny-ingress", "servicemonitors/seaweedfs",
        )]  # fmt: skip
        assert order == sorted(order)
        assert helm.calls == [
            "install mlops/mlflow 1.11.5",
            "install kserve/kserve-crd v0.20.0",
            "install kserve/kserve v0.20.0",
        ]

        # The Secrets were sent to the API server from the environment, into both namespaces.
        db = api.find("secrets", "mlflow-db", "mlops")
        assert db is not None and db["stringData"] == {"username": "mlflow", "password": "db-pw"}
        models = api.find("secrets", "s3-credentials", "production")
        assert models is not None and models["stringData"]["AWS_ACCESS_KEY_ID"] == "stack-key-id"
        assert models["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]  # KServe's own annotations

    assert [r.component for r in rows] == [
        "namespaces",
        "objectstore",
        "postgresql",
        "mlflow",
        "kserve",
        "networkpolicies",
        "monitors",
    ]
    assert all(r.ready for r in rows), [r.detail for r in rows if not r.ready]
    endpoints = {r.component: r.endpoint for r in rows}
    assert endpoints["mlflow"] == "http://mlflow.ai-how.local"
    assert endpoints["objectstore"].startswith("http://seaweedfs.mlops.svc.cluster.local:8333")
    assert "objectstore: applied 3 objects" in lines
    assert "postgresql: StatefulSet postgresql 1/1 ready" in lines
    assert "objectstore: Job objectstore-buckets complete" in lines


def test_up_twice_is_idempotent(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        _up(config, api, tmp_path)
        count = len(api.objects)
        _up(config, api, tmp_path)
        assert len(api.objects) == count
        assert not any(r.startswith("DELETE") for r in api.requests)  # an unchanged Job is not replaced


def test_a_job_whose_spec_changed_is_replaced(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        api.put("apis/batch/v1", "mlops", "jobs", {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "objectstore-buckets", "annotations": {SPEC_HASH_ANNOTATION: "old"}},
            "spec": {"template": {"spec": {"containers": [{"name": "old", "image": "old"}]}}},
        })  # fmt: skip
        _up(config, api, tmp_path)
        assert "DELETE /apis/batch/v1/namespaces/mlops/jobs/objectstore-buckets" in api.requests
        job = api.find("jobs", "objectstore-buckets", "mlops")
        assert job is not None and job["metadata"]["annotations"][SPEC_HASH_ANNOTATION] != "old"


def test_a_workload_that_never_gets_ready_fails_with_its_events(
    config: ClusterConfig, tmp_path: Path
) -> None:
    def stuck(api: StandinApi, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "postgresql":
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": 1,
                "readyReplicas": 0,
            }
            if not api.events:
                pod = {"kind": "Pod", "metadata": {"name": "postgresql-0", "namespace": "mlops"}}
                api.add_event(
                    pod,
                    "FailedScheduling",
                    "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
                )
        else:
            _ready_workload(api, obj)

    with standin_api(pods=[], controllers={**READY, "statefulsets": stuck}) as api:
        _with_monitoring_crd(api)
        helm = RecordingHelm(api)
        lines: list[str] = []
        with pytest.raises(AiHowError) as caught:
            up(
                config,
                api.kubeconfig(tmp_path / "kc"),
                helm,
                progress=lines.append,
                environ=ENV,
                timeout_s=0.3,
                poll_s=0.02,
            )
        assert helm.calls == []  # MLflow is not installed on a database that is not ready
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("postgresql: StatefulSet mlops/postgresql not ready after 0.3s (0/1 ready)")
    assert "FailedScheduling: 0/4 nodes are available" in text
    assert "kubectl -n mlops describe statefulset postgresql" in (caught.value.fix or "")
    assert any(
        line.startswith("postgresql: waiting for StatefulSet postgresql (0/1 ready)") for line in lines
    )


def test_a_failed_job_stops_the_wait_at_once(config: ClusterConfig, tmp_path: Path) -> None:
    def failed(api: StandinApi, obj: dict[str, Any]) -> None:
        obj["status"] = {
            "failed": 7,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }

    with standin_api(pods=[], controllers={**READY, "jobs": failed}) as api:
        _with_monitoring_crd(api)
        with pytest.raises(
            AiHowError, match="objectstore: Job mlops/objectstore-buckets failed: BackoffLimitExceeded"
        ):
            _up(config, api, tmp_path, timeout_s=60)


def test_missing_secrets_and_env_name_the_variable_to_set(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        with pytest.raises(AiHowError) as caught:
            _up(config, api, tmp_path, environ={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
        assert "Secret mlops/mlflow-db does not exist and $MLFLOW_DB_PASSWORD is not set" in str(caught.value)
        assert "export MLFLOW_DB_PASSWORD" in (caught.value.fix or "")
        assert api.find("statefulsets", "seaweedfs", "mlops") is None  # nothing past the namespaces


def test_existing_secrets_are_used_when_the_env_is_not_set(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        for namespace, name in (
            ("mlops", "mlflow-db"),
            ("mlops", "s3-credentials"),
            ("production", "s3-credentials"),
        ):
            api.put(
                "api/v1",
                namespace,
                "secrets",
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}},
            )
        rows, _, _ = _up(config, api, tmp_path, environ={})
        assert all(r.ready for r in rows)
        assert not any(
            a["path"].endswith(("/secrets/mlflow-db", "/secrets/s3-credentials")) for a in api.applies
        )


def test_without_the_servicemonitor_crd_up_says_what_to_install(
    config: ClusterConfig, tmp_path: Path
) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        with pytest.raises(AiHowError) as caught:
            _up(config, api, tmp_path)
        assert api.applies == []  # checked before anything is applied
    assert "CRD servicemonitors.monitoring.coreos.com is not installed" in str(caught.value)
    assert "service_monitors: false" in (caught.value.fix or "")


# --------------------------------------------------------------------------- down


def test_down_removes_what_up_applied_and_leaves_foreign_objects_alone(
    config: ClusterConfig, tmp_path: Path
) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        # A namespace someone else made, and a foreign object in one ai-how makes.
        api.put(
            "api/v1",
            "",
            "namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}},
        )
        _, helm, lines = _up(config, api, tmp_path)
        assert "namespaces: namespace monitoring exists and was not created by ai-how: left as it is" in lines
        api.put(
            "api/v1",
            "mlops",
            "configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team-notes"}},
        )

        said: list[str] = []
        removed = down(config, api.kubeconfig(tmp_path / "kc"), helm, progress=said.append)

        assert "StatefulSet mlops/postgresql" in removed and "Job mlops/objectstore-buckets" in removed
        assert "ServingRuntime production/ai-how-runtime" in removed
        assert "Secret mlops/mlflow-db" in removed and "Namespace production" in removed
        assert helm.calls[-2:] == [
            "uninstall kserve/kserve",
            "uninstall mlops/mlflow",
        ]  # CRDs stay by default
        assert api.find("configmaps", "team-notes", "mlops") is not None
        assert api.find("namespaces", "mlops") is not None  # kept: it holds the foreign ConfigMap
        assert any("kept mlops: it holds ConfigMap team-notes" in line for line in said)
        assert api.find("namespaces", "monitoring") is not None  # never ai-how's
        assert api.find("namespaces", "production") is None
        left = [
            key
            for key in api.objects
            if key[2] not in ("namespaces", "customresourcedefinitions", "configmaps")
        ]
        assert left == []


def test_down_leaves_an_object_without_ai_hows_label(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        someone_elses = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "postgresql"},
            "spec": {"replicas": 1},
        }
        api.put("apis/apps/v1", "mlops", "statefulsets", someone_elses)
        said: list[str] = []
        removed = down(
            config,
            api.kubeconfig(tmp_path / "kc"),
            RecordingHelm(api),
            progress=said.append,
            remove_crds=True,
        )
        assert api.find("statefulsets", "postgresql", "mlops") is not None
        assert "postgresql: StatefulSet mlops/postgresql was not applied by ai-how: left alone" in said
        assert "helm release kserve/kserve-crd" in removed


# --------------------------------------------------------------------------- status


def test_status_names_what_is_missing_or_not_ready(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        _with_monitoring_crd(api)
        _up(config, api, tmp_path)
        api.objects.pop(("apis/apps/v1", "mlops", "deployments", "mlflow"))
        api.controllers["statefulsets"] = lambda _api, obj: obj.update(
            status={"observedGeneration": 1, "readyReplicas": 0}
        )
        rows = {r.component: r for r in status(config, api.kubeconfig(tmp_path / "kc"))}
    assert rows["namespaces"].ready and rows["kserve"].ready
    assert not rows["mlflow"].ready and "Deployment mlops/mlflow (helm release)" in rows["mlflow"].detail
    assert rows["postgresql"].detail == "StatefulSet postgresql 0/1 ready"
    assert json.loads(json.dumps(rows["postgresql"].to_json()))["ready"] is False


def test_status_of_an_empty_cluster_says_not_applied(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[]) as api:
        rows = status(config, api.kubeconfig(tmp_path / "kc"))
    assert not any(r.ready for r in rows)
    assert rows[1].detail.startswith("not applied: Service seaweedfs, StatefulSet seaweedfs")


def test_status_cli_prints_json_and_exits_1_until_ready(config: ClusterConfig, tmp_path: Path) -> None:
    with standin_api(pods=[], controllers=READY) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kc")
        argv = ["cloud", "stack", "status", str(EXAMPLE), "--kubeconfig", str(kubeconfig), "--json"]
        before = CliRunner().invoke(app, argv)
        _with_monitoring_crd(api)
        _up(config, api, tmp_path)
        after = CliRunner().invoke(app, argv)
    assert before.exit_code == 1 and json.loads(before.stdout)["ready"] is False
    assert after.exit_code == 0, after.output
    data = json.loads(after.stdout)
    assert data["ready"] is True
    assert {c["component"]: c["endpoint"] for c in data["components"]}[
        "mlflow"
    ] == "http://mlflow.ai-how.local"


def test_render_cli_writes_the_folder_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_DB_PASSWORD", "cli-marker-db-password")
    result = CliRunner().invoke(
        app, ["cloud", "stack", "render", str(EXAMPLE), "-o", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert files[0] == "00-namespaces.yaml" and "README.txt" in files
    assert all("cli-marker" not in (tmp_path / "out" / f).read_text() for f in files)


# --------------------------------------------------------------------------- live


@pytest.mark.live
def test_live_stack_status(config: ClusterConfig) -> None:
    """Reads the stack's status on the cluster KUBECONFIG names (read-only); skipped without one."""
    value = os.environ.get("KUBECONFIG")
    if not value:
        pytest.skip("KUBECONFIG is not set: no Kubernetes cluster to check (no API server can run here)")
    path = Path(value.split(os.pathsep)[0]).expanduser()
    if not path.is_file():
        pytest.skip(f"KUBECONFIG names {path}, which does not exist")
    try:
        rows = status(config, path)
    except KubeUnreachableError as exc:
        pytest.skip(f"KUBECONFIG points at no reachable cluster: {exc.message}")
    assert [r.component for r in rows][:3] == ["namespaces", "objectstore", "postgresql"]
    assert all(r.ready or r.detail for r in rows)
