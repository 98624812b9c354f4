"""The cloud side's monitoring: kube-prometheus-stack values against the chart's 88.5.3 defaults, and the
PrometheusRules, Pod/ServiceMonitors, dashboard ConfigMaps and Alertmanager Secret against their schemas
(the prometheus-operator CRDs, kubernetes-validate), through ai_how.kube.validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube.validation import check_values_keys, validate_objects
from ai_how.monitoring import kube_prometheus
from ai_how.monitoring.dashboards import dashboards
from ai_how.monitoring.render import dump_yaml, write_render
from ai_how.monitoring.rules import alert_names, rule_groups
from tests.monitoring.tools import assert_ok, example_config, promtool, schemas_dir


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    path = schemas_dir("charts/kube-prometheus-stack-88.5.3.values.yaml")
    return dict(yaml.safe_load(path.read_text()))


@pytest.fixture
def crd_dir() -> Path:
    return schemas_dir("prometheus-operator")


def _federated(config: ClusterConfig) -> ClusterConfig:
    federation = config.monitoring.federation.model_copy(
        update={"enabled": True, "hpc_prometheus_url": "http://192.168.100.1:9090"}
    )
    return config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"federation": federation})}
    )


def test_every_values_key_exists_in_the_chart_defaults(defaults: dict[str, Any]) -> None:
    values = kube_prometheus.values(_federated(example_config()))
    assert check_values_keys(values, defaults, chart="kube-prometheus-stack") == []


def test_a_typo_in_the_values_would_be_caught(defaults: dict[str, Any]) -> None:
    values = copy.deepcopy(kube_prometheus.values(example_config()))
    values["prometheus"]["prometheusSpec"]["serviceMonitorSelectorNilUsesHelmValue"] = False
    assert check_values_keys(values, defaults, chart="kube-prometheus-stack")


def test_prometheus_picks_up_every_monitor_and_rule_and_labels_its_cluster() -> None:
    config = example_config()
    spec = kube_prometheus.values(config)["prometheus"]["prometheusSpec"]
    for switch in ("serviceMonitor", "podMonitor", "rule", "probe"):
        assert spec[f"{switch}SelectorNilUsesHelmValues"] is False
    assert spec["externalLabels"] == {"cluster": "inference-cluster"}
    assert spec["retention"] == config.monitoring.prometheus.retention == "30d"
    assert spec["scrapeClasses"][0]["default"] is True
    assert spec["scrapeClasses"][0]["relabelings"] == [
        {"targetLabel": "cluster", "replacement": "inference-cluster"}
    ]
    (federate,) = spec["additionalScrapeConfigs"]  # the example federates the workstation's Prometheus
    assert federate["static_configs"] == [{"targets": ["192.168.100.1:9090"]}]
    off = example_config()
    off.monitoring.federation.enabled = False
    assert "additionalScrapeConfigs" not in kube_prometheus.values(off)["prometheus"]["prometheusSpec"]


def test_federation_becomes_an_additional_scrape_config_promtool_accepts(tmp_path: Path) -> None:
    spec = kube_prometheus.values(_federated(example_config()))["prometheus"]["prometheusSpec"]
    (job,) = spec["additionalScrapeConfigs"]
    assert (job["job_name"], job["honor_labels"], job["metrics_path"]) == ("federate-hpc", True, "/federate")
    assert job["params"]["match[]"] == ['{job=~"slurm|node|dcgm|pipeline"}', '{__name__=~"job:.*"}']
    path = tmp_path / "prometheus.yml"
    path.write_text(
        dump_yaml({"global": {"external_labels": spec["externalLabels"]}, "scrape_configs": [job]})
    )
    assert_ok(promtool("check", "config", path))


def test_grafana_sidecar_and_alertmanager_secret_reference() -> None:
    values = kube_prometheus.values(example_config())
    assert values["grafana"]["sidecar"]["dashboards"] == {
        "enabled": True,
        "label": "grafana_dashboard",
        "labelValue": "1",
    }
    assert values["alertmanager"]["alertmanagerSpec"]["useExistingSecret"] is True


def test_prometheusrules_and_monitors_validate_against_the_crds(crd_dir: Path) -> None:
    config = example_config()
    objects = kube_prometheus.prometheus_rules(config) + kube_prometheus.monitors(config)
    assert {o["kind"] for o in objects} == {"PrometheusRule", "PodMonitor"}
    assert validate_objects(objects, kubernetes_version="1.35", crd_dir=crd_dir) == []


def test_a_typo_in_a_monitor_fails_crd_validation(crd_dir: Path) -> None:
    (monitor,) = copy.deepcopy(kube_prometheus.monitors(example_config()))
    monitor["spec"]["podMetricsEndpoints"][0]["portNumbr"] = 8080
    problems = validate_objects([monitor], crd_dir=crd_dir)
    assert problems and "portNumbr" in problems[0]


def test_the_prometheusrules_carry_every_alert_scoped_to_the_cloud_cluster() -> None:
    config = example_config()
    objects = kube_prometheus.prometheus_rules(config)
    assert all(o["metadata"]["namespace"] == "monitoring" for o in objects)
    alerts = [r for o in objects for g in o["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert [a["alert"] for a in alerts] == alert_names(rule_groups(config.monitoring))
    assert all('cluster="inference-cluster"' in a["expr"] for a in alerts)


def test_model_servers_are_scraped_as_job_model_servers_with_a_model_label() -> None:
    config = example_config()
    (pod_monitor,) = kube_prometheus.monitors(config)
    assert pod_monitor["metadata"]["namespace"] == config.mlops.serving.namespace == "production"
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["portNumber"], endpoint["path"]) == (8080, "/metrics")
    assert {"targetLabel": "job", "replacement": "model-servers"} in endpoint["relabelings"]
    assert endpoint["relabelings"][1]["targetLabel"] == "model"


def test_mlflow_gets_a_servicemonitor_when_its_chart_makes_none(crd_dir: Path) -> None:
    config = example_config()
    assert config.mlops.kubernetes.service_monitors  # the MLflow chart's own ServiceMonitor (job mlflow)
    kube = config.mlops.kubernetes.model_copy(update={"service_monitors": False})
    config = config.model_copy(update={"mlops": config.mlops.model_copy(update={"kubernetes": kube})})
    objects = kube_prometheus.monitors(config)
    (mlflow,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert mlflow["metadata"]["namespace"] == "mlops"
    assert mlflow["spec"]["endpoints"][0]["relabelings"] == [{"targetLabel": "job", "replacement": "mlflow"}]
    assert validate_objects(objects, crd_dir=crd_dir) == []


def test_dashboard_configmaps_and_the_alertmanager_secret_are_valid_kubernetes_objects() -> None:
    config = example_config()
    configmaps = kube_prometheus.dashboard_configmaps(config, dashboards(config))
    secret = kube_prometheus.alertmanager_config_secret(config)
    assert validate_objects([*configmaps, secret], kubernetes_version="1.35") == []
    for configmap in configmaps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        (text,) = configmap["data"].values()
        assert json.loads(text)["schemaVersion"] == 39
    assert secret["metadata"]["name"] == "alertmanager-kube-prometheus-stack-alertmanager"
    assert "route" in yaml.safe_load(secret["stringData"]["alertmanager.yaml"])


def test_the_rendered_kubernetes_files_hold_the_same_objects(tmp_path: Path, crd_dir: Path) -> None:
    write_render(example_config(), tmp_path, state_dir=tmp_path / "state")
    objects = [
        doc
        for name in (
            "prometheusrules.yaml",
            "monitors.yaml",
            "grafana-dashboards.yaml",
            "alertmanager-config.yaml",
        )
        for doc in yaml.safe_load_all((tmp_path / "kubernetes" / name).read_text())
    ]
    assert len(objects) > 10
    assert validate_objects(objects, kubernetes_version="1.35", crd_dir=crd_dir) == []


def test_no_cloud_cluster_is_an_error_for_the_cloud_objects_and_no_kubernetes_files(tmp_path: Path) -> None:
    config = example_config()
    config = config.model_copy(update={"clusters": config.clusters.model_copy(update={"cloud": None})})
    with pytest.raises(AiHowError, match=r"clusters\.cloud"):
        kube_prometheus.values(config)
    write_render(config, tmp_path, state_dir=tmp_path / "state")
    assert not (tmp_path / "kubernetes").exists()
