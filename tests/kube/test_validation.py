"""ai_how.kube.validation: strict checks that fail on a typo (core kinds, CRD kinds, Helm values)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.loader import load_config
from ai_how.errors import AiHowError
from ai_how.kube.kserve import serving_runtime
from ai_how.kube.validation import (
    check_values_keys,
    check_values_schema,
    closed_schema,
    major_minor,
    merged_values,
    validate_objects,
)
from tests.conftest import EXAMPLE, REPO

SCHEMAS = REPO.parent / "shared" / "schemas"
CHARTS = SCHEMAS / "charts"


@pytest.fixture
def crd_dir() -> Path:
    if not (SCHEMAS / "prometheus-operator").is_dir():
        pytest.skip(f"the CRD schemas are not here: {SCHEMAS} (shared schemas not checked out)")
    return SCHEMAS


def _chart_file(name: str) -> Path:
    path = CHARTS / name
    if not path.is_file():
        pytest.skip(f"the chart's defaults are not here: {path} (shared schemas not checked out)")
    return path


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "mlops", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.29"}]},
        },
    },
}

SERVICE_MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "seaweedfs", "namespace": "mlops", "labels": {"app": "seaweedfs"}},
    "spec": {
        "selector": {"matchLabels": {"app": "seaweedfs"}},
        "endpoints": [{"port": "metrics", "interval": "30s"}],
    },
}


# --------------------------------------------------------------------------- core kinds


def test_a_valid_deployment_has_no_problems() -> None:
    assert validate_objects([DEPLOYMENT], kubernetes_version="1.35.4") == []


def test_a_typo_in_a_deployment_fails_strict_validation_naming_object_and_path() -> None:
    typo = copy.deepcopy(DEPLOYMENT)
    typo["spec"]["replica"] = typo["spec"].pop("replicas")
    problems = validate_objects([typo], kubernetes_version="v1.35")
    assert len(problems) == 1
    assert problems[0].startswith("Deployment mlops/web: $.spec: ")
    assert "'replica'" in problems[0]


def test_a_wrong_type_deep_inside_names_the_json_path() -> None:
    wrong = copy.deepcopy(DEPLOYMENT)
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    (problem,) = validate_objects([wrong], kubernetes_version="1.35")
    assert "$.spec.template.spec.containers[0].ports[0].containerPort" in problem


def test_an_unknown_core_kind_is_a_problem_not_a_pass() -> None:
    problems = validate_objects([{"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}])
    assert problems and "Couldn't find schema for kind Gizmo" in problems[0]


def test_a_kubernetes_version_without_schemas_is_one_line() -> None:
    with pytest.raises(AiHowError, match=r"no schemas for Kubernetes 1\.99"):
        validate_objects([DEPLOYMENT], kubernetes_version="1.99.0")
    with pytest.raises(AiHowError, match="not a Kubernetes version"):
        major_minor("latest")


# --------------------------------------------------------------------------- CRD kinds


def test_a_valid_service_monitor_passes_its_crd(crd_dir: Path) -> None:
    assert validate_objects([SERVICE_MONITOR], crd_dir=crd_dir) == []


def test_a_typo_in_a_service_monitor_fails_because_crd_objects_are_closed(crd_dir: Path) -> None:
    typo = copy.deepcopy(SERVICE_MONITOR)
    typo["spec"]["endpoint"] = typo["spec"].pop("endpoints")
    problems = validate_objects([typo], crd_dir=crd_dir)
    assert any(
        p.startswith("ServiceMonitor mlops/seaweedfs: $.spec: ") and "'endpoint'" in p for p in problems
    )
    nested = copy.deepcopy(SERVICE_MONITOR)
    nested["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any(
        "$.spec.endpoints[0]" in p and "'intervall'" in p for p in validate_objects([nested], crd_dir=crd_dir)
    )


def test_ai_hows_serving_runtime_passes_and_its_typo_fails(crd_dir: Path) -> None:
    runtime = serving_runtime(load_config(EXAMPLE).config)
    assert validate_objects([runtime], crd_dir=crd_dir) == []
    runtime["spec"]["supportedModelFormat"] = runtime["spec"].pop("supportedModelFormats")
    assert any("'supportedModelFormat'" in p for p in validate_objects([runtime], crd_dir=crd_dir))


def test_crd_kinds_are_skipped_without_a_crd_dir_and_reported_without_their_crd(tmp_path: Path) -> None:
    assert validate_objects([SERVICE_MONITOR]) == []  # the product ships no CRD files
    (problem,) = validate_objects([SERVICE_MONITOR], crd_dir=tmp_path)
    assert "no CRD for ServiceMonitor (monitoring.coreos.com/v1)" in problem


def test_closing_keeps_maps_that_preserve_unknown_fields_open() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["spec"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]["free"]
    assert closed["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the input is not changed


# --------------------------------------------------------------------------- helm values


def test_values_keys_must_exist_in_the_chart_defaults() -> None:
    defaults = yaml.safe_load(_chart_file("mlflow-1.11.5.values.yaml").read_text())
    good = {"ingress": {"enabled": True, "hosts": [{"host": "x"}]}, "nodeSelector": {"any/label": "v"}}
    assert check_values_keys(good, defaults, chart="mlflow") == []
    bad = {"ingress": {"enable": True}, "serviceMonitor": {"enabled": True, "intervall": "1m"}}
    assert check_values_keys(bad, defaults, chart="mlflow") == [
        "mlflow values: $.ingress.enable: not a key of the chart's values",
        "mlflow values: $.serviceMonitor.intervall: not a key of the chart's values",
    ]


def test_mlflow_values_are_checked_with_the_charts_json_schema_after_merging() -> None:
    defaults = yaml.safe_load(_chart_file("mlflow-1.11.5.values.yaml").read_text())
    schema = json.loads(_chart_file("mlflow-1.11.5.values.schema.json").read_text())
    assert check_values_schema({"backendStore": {"postgres": {"enabled": True}}}, defaults, schema) == []
    problems = check_values_schema(
        {"backendStore": {"postgres": {"port": "5432"}}}, defaults, schema, chart="mlflow"
    )
    assert any(p.startswith("mlflow values: $.backendStore.postgres.port: ") for p in problems)
    # Two database backends at once break the chart's own rule.
    both = {"backendStore": {"postgres": {"enabled": True}}, "postgresql": {"enabled": True}}
    assert check_values_schema(both, defaults, schema)


def test_merged_values_merge_maps_and_replace_lists() -> None:
    merged = merged_values({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1}
