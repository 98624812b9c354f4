"""``ai-how cloud stack render``: the stack as plain YAML in apply order, every object valid, chart values
that exist in the pinned charts, placement from the config, and never a secret in the folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.kube.stack import kserve_charts, mlflow
from ai_how.kube.stack.render import all_objects, rendered_problems, stack_components, write_render
from ai_how.kube.validation import check_values_keys, check_values_schema
from tests.conftest import EXAMPLE, REPO

SCHEMAS = REPO.parent / "shared" / "schemas"
CHARTS = SCHEMAS / "charts"
MARKER = "s3cr3t-marker-7f3a"


@pytest.fixture
def config() -> ClusterConfig:
    return load_config(EXAMPLE).config


@pytest.fixture
def config_from(
    write_config: Callable[[dict[str, Any]], Path], example_data: dict[str, Any]
) -> Callable[..., ClusterConfig]:
    def make(change: Callable[[dict[str, Any]], None]) -> ClusterConfig:
        change(example_data)
        return load_config(write_config(example_data)).config

    return make


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (shared schemas not checked out)")
    return path


def _by_kind(config: ClusterConfig) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in all_objects(stack_components(config))}


# --------------------------------------------------------------------------- validity


def test_every_rendered_object_validates_core_kinds_and_crds(config: ClusterConfig) -> None:
    components = stack_components(config)
    kinds = {o["kind"] for o in all_objects(components)}
    assert {
        "Namespace",
        "Service",
        "StatefulSet",
        "Job",
        "NetworkPolicy",
        "ServingRuntime",
        "ServiceMonitor",
    } <= kinds
    assert "Secret" not in kinds
    assert rendered_problems(config, components, crd_dir=_need(SCHEMAS / "prometheus-operator").parent) == []


def test_mlflow_values_exist_in_the_chart_and_pass_its_schema(config: ClusterConfig) -> None:
    defaults = yaml.safe_load(_need(CHARTS / "mlflow-1.11.5.values.yaml").read_text())
    schema = json.loads(_need(CHARTS / "mlflow-1.11.5.values.schema.json").read_text())
    values = mlflow.mlflow_values(config)
    assert check_values_keys(values, defaults, chart="mlflow") == []
    assert check_values_schema(values, defaults, schema, chart="mlflow") == []
    assert values["backendStore"]["postgres"]["host"] == "postgresql.mlops.svc.cluster.local"
    assert values["backendStore"]["existingDatabaseSecret"]["name"] == "mlflow-db"
    assert values["artifactRoot"]["s3"] == {
        "enabled": True,
        "bucket": "mlflow-artifacts",
        "existingSecret": {
            "name": "s3-credentials",
            "keyOfAccessKeyId": "AWS_ACCESS_KEY_ID",
            "keyOfSecretAccessKey": "AWS_SECRET_ACCESS_KEY",
        },
    }
    assert values["extraEnvVars"]["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs.mlops.svc.cluster.local:8333"
    assert values["ingress"]["hosts"][0]["host"] == "mlflow.ai-how.local"
    assert values["serviceMonitor"]["enabled"] is True
    assert values["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}  # from the config


def test_kserve_values_exist_in_the_chart_and_ask_for_standard_mode(config: ClusterConfig) -> None:
    defaults = yaml.safe_load(_need(CHARTS / "kserve-resources-v0.20.0.values.yaml").read_text())
    values = kserve_charts.kserve_values(config)
    assert check_values_keys(values, defaults, chart="kserve-resources") == []
    assert values["kserve"]["controller"]["deploymentMode"] == "Standard"
    assert kserve_charts.KSERVE.version == kserve_charts.KSERVE_CRD.version == "v0.20.0"


def test_minio_stays_an_option_and_validates(config_from: Callable[..., ClusterConfig]) -> None:
    config = config_from(lambda d: d["mlops"]["kubernetes"].update(object_store="minio"))
    objects = _by_kind(config)
    container = objects[("StatefulSet", "minio")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert {e["name"] for e in container["env"]} == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    job_env = {
        e["name"]: e.get("value")
        for e in objects[("Job", "objectstore-buckets")]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert job_env["AWS_ENDPOINT_URL"] == "http://minio.mlops.svc.cluster.local:9000"
    assert rendered_problems(config, stack_components(config)) == []


# --------------------------------------------------------------------------- content


def test_seaweedfs_postgresql_and_buckets_follow_the_config(config: ClusterConfig) -> None:
    objects = _by_kind(config)
    seaweed = objects[("StatefulSet", "seaweedfs")]["spec"]
    container = seaweed["template"]["spec"]["containers"][0]
    assert container["image"] == "chrislusf/seaweedfs:4.47"
    assert container["ports"][0] == {"name": "s3", "containerPort": 8333, "protocol": "TCP", "hostPort": 9000}
    assert "-s3" in container["command"][-1]
    claim = seaweed["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "local-path" and claim["resources"]["requests"]["storage"] == "50Gi"

    job = objects[("Job", "objectstore-buckets")]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in job["env"]}["BUCKETS"] == "mlflow-artifacts models datasets"

    pg = objects[("StatefulSet", "postgresql")]["spec"]
    pg_container = pg["template"]["spec"]["containers"][0]
    assert "pg_isready" in pg_container["readinessProbe"]["exec"]["command"][-1]
    password = next(e for e in pg_container["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"] == {"secretKeyRef": {"name": "mlflow-db", "key": "password"}}
    assert pg["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "local-path"
    assert pg_container["resources"]["limits"] and pg_container["resources"]["requests"]


def test_mlops_services_run_on_the_cpu_worker_that_lists_them(config: ClusterConfig) -> None:
    objects = _by_kind(config)
    for name in ("seaweedfs", "postgresql"):
        pod = objects[("StatefulSet", name)]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"kubernetes.io/hostname": "cpu-worker"}, name
        assert "tolerations" not in pod  # the cpu worker has no taint
    assert mlflow.mlflow_values(config)["nodeSelector"] == {"kubernetes.io/hostname": "cpu-worker"}


def test_a_tainted_worker_gets_its_taint_tolerated(config_from: Callable[..., ClusterConfig]) -> None:
    def move_to_gpu(data: dict[str, Any]) -> None:
        data["clusters"]["cloud"]["worker_nodes"]["cpu"][0]["services"] = ["mlflow"]
        data["clusters"]["cloud"]["worker_nodes"]["gpu"][0]["services"] = ["postgresql"]

    config = config_from(move_to_gpu)
    pod = _by_kind(config)[("StatefulSet", "postgresql")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-worker-1"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    # Listed nowhere: no selector, the scheduler picks.
    assert "nodeSelector" not in _by_kind(config)[("StatefulSet", "seaweedfs")]["spec"]["template"]["spec"]


def test_network_policies_let_in_only_the_stack_flows(config: ClusterConfig) -> None:
    policies = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]
        for o in all_objects(stack_components(config))
        if o["kind"] == "NetworkPolicy"
    }
    assert policies[("mlops", "default-deny-ingress")] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [],
    }
    pg = policies[("mlops", "postgresql")]["ingress"]
    assert pg == [
        {
            "from": [{"podSelector": {"matchLabels": {"ai-how.io/stack-component": "mlflow"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        }
    ]
    mlflow_from = policies[("mlops", "mlflow")]["ingress"][0]["from"][0]["namespaceSelector"][
        "matchExpressions"
    ][0]
    assert mlflow_from["values"] == ["ingress-nginx", "monitoring", "production"]
    store_from = policies[("mlops", "objectstore")]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "192.168.200.0/24"}} in store_from  # the workstation syncs models over S3
    assert ("production", "models") in policies


# --------------------------------------------------------------------------- the folder


def test_render_writes_plain_yaml_in_apply_order_deterministically(
    config: ClusterConfig, tmp_path: Path
) -> None:
    first = write_render(config, tmp_path / "a")
    write_render(config, tmp_path / "b")
    names = [str(p.relative_to(tmp_path / "a")) for p in first]
    assert names[:3] == ["00-namespaces.yaml", "10-objectstore.yaml", "20-postgresql.yaml"]
    assert "30-mlflow/mlflow.values.yaml" in names and "40-kserve/objects.yaml" in names
    assert names.index("40-kserve/objects.yaml") < names.index("50-networkpolicies.yaml")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        if name.endswith(".yaml"):
            text = (tmp_path / "a" / name).read_text()
            assert "&id" not in text and "*id" not in text  # no YAML aliases: plain to read
            assert all(doc is not None for doc in yaml.safe_load_all(text))
    kustomization = yaml.safe_load((tmp_path / "a" / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "00-namespaces.yaml"
    readme = (tmp_path / "a" / "README.txt").read_text()
    assert (
        "helm upgrade --install mlflow mlflow --repo https://community-charts.github.io/helm-charts --version 1.11.5"
        in readme
    )
    assert "kserve oci://ghcr.io/kserve/charts/kserve-resources --version v0.20.0" in readme
    assert "$MLFLOW_DB_PASSWORD" in readme


def test_no_secret_value_is_ever_written(
    config: ClusterConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_DB_PASSWORD"):
        monkeypatch.setenv(name, f"{MARKER}-{name}")
    written = write_render(config, tmp_path / "out")
    assert written
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert MARKER not in text, path
            for doc in yaml.safe_load_all(text) if path.suffix == ".yaml" else []:
                assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), path
