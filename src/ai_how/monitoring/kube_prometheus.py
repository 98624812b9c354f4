"""The cloud side's monitoring: kube-prometheus-stack 88.5.3 values, PrometheusRules, Pod/ServiceMonitors,
the dashboards as sidecar ConfigMaps and the Alertmanager configuration Secret.

* Prometheus picks up every ServiceMonitor, PodMonitor, PrometheusRule and Probe (the ``*NilUsesHelmValues``
  switches off), labels every scraped series ``cluster=<cloud>`` through a default scrape class, and
  federates the HPC side (``additionalScrapeConfigs``) when ``monitoring.federation`` is on.
* The rules are the HPC side's, scoped to the cloud cluster's own series (see ``promql.Scope``).
* Model servers: a PodMonitor on KServe predictor pods (port 8080, ``/metrics``, job ``model-servers``,
  label ``model`` = the InferenceService). MLflow: a ServiceMonitor (job ``mlflow``) unless the MLflow
  chart already creates one (``mlops.kubernetes.service_monitors``).
* Alertmanager reads its configuration from a Secret this module renders (it holds no secret: webhook
  URLs and SMTP passwords are files from the receivers Secret, created from the environment at apply).
Every values key exists in the chart's defaults; tests check it with ``kube.validation``.
"""

from __future__ import annotations

from typing import Any

import yaml

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube.kserve import MANAGED_BY, SERVER_PORT
from ai_how.kube.stack.common import MLFLOW_RELEASE
from ai_how.monitoring import metrics_catalog as m
from ai_how.monitoring.alertmanager_config import RECEIVERS_SECRET, alertmanager_config, cloud_secrets_dir
from ai_how.monitoring.prometheus_config import cloud_cluster_label, external_labels, federation_job
from ai_how.monitoring.rules import rule_groups

CHART_VERSION = "88.5.3"
CHART_REPO = "https://prometheus-community.github.io/helm-charts"
RELEASE = "kube-prometheus-stack"  # the Prometheus service is <release>-prometheus (serving's KEDA default)
# The Alertmanager object is <release>-alertmanager; with useExistingSecret the operator reads its config
# from the Secret "alertmanager-<object name>", key alertmanager.yaml.
ALERTMANAGER_CONFIG_SECRET = f"alertmanager-{RELEASE}-alertmanager"
DASHBOARD_LABEL = "grafana_dashboard"
DASHBOARD_LABEL_VALUE = "1"
KSERVE_ISVC_LABEL = "serving.kserve.io/inferenceservice"
MONITORING_API = "monitoring.coreos.com/v1"


def cloud_cluster(config: ClusterConfig) -> str:
    cluster = cloud_cluster_label(config)
    if cluster is None:
        raise AiHowError(
            "the config has no clusters.cloud section: there is no cloud cluster to monitor",
            fix="add the cloud cluster (see config/example-cluster.yaml) or render only the HPC side",
        )
    return cluster


def _namespace(config: ClusterConfig) -> str:
    return config.mlops.kubernetes.monitoring_namespace


def values(config: ClusterConfig) -> dict[str, Any]:
    """kube-prometheus-stack values (every key exists in the chart's 88.5.3 defaults)."""
    mon = config.monitoring
    cluster = cloud_cluster(config)
    spec: dict[str, Any] = {
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
        "probeSelectorNilUsesHelmValues": False,
        "scrapeInterval": mon.prometheus.scrape_interval,
        "evaluationInterval": mon.prometheus.evaluation_interval,
        "retention": mon.prometheus.retention,
        "externalLabels": external_labels(mon, cluster),
        "scrapeClasses": [
            {
                "name": "ai-how-cluster",
                "default": True,
                "relabelings": [{"targetLabel": m.CLUSTER_LABEL, "replacement": cluster}],
            }
        ],
    }
    federation = federation_job(mon)
    if federation is not None:
        spec["additionalScrapeConfigs"] = [federation]
    result: dict[str, Any] = {"prometheus": {"prometheusSpec": spec}}
    if mon.alertmanager.enabled:
        alertmanager_spec: dict[str, Any] = {"useExistingSecret": True}
        if any(r.webhook_url_env or r.smtp_password_env for r in mon.alertmanager.receivers):
            alertmanager_spec["secrets"] = [RECEIVERS_SECRET]
        result["alertmanager"] = {"enabled": True, "alertmanagerSpec": alertmanager_spec}
    else:
        result["alertmanager"] = {"enabled": False}
    grafana: dict[str, Any] = {"enabled": mon.grafana.enabled}
    if mon.grafana.enabled:
        grafana["sidecar"] = {
            "dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "labelValue": DASHBOARD_LABEL_VALUE}
        }
    result["grafana"] = grafana
    return result


def prometheus_rules(config: ClusterConfig, *, for_override: str | None = None) -> list[dict[str, Any]]:
    """One PrometheusRule per rule group, scoped to the cloud cluster's series."""
    groups = rule_groups(config.monitoring, cluster=cloud_cluster(config), for_override=for_override)
    return [
        {
            "apiVersion": MONITORING_API,
            "kind": "PrometheusRule",
            "metadata": {"name": group.name, "namespace": _namespace(config), "labels": dict(MANAGED_BY)},
            "spec": {"groups": [group.to_dict()]},
        }
        for group in groups
    ]


def _job_relabeling(job: str) -> dict[str, str]:
    return {"targetLabel": "job", "replacement": job}


def monitors(config: ClusterConfig) -> list[dict[str, Any]]:
    """A PodMonitor for KServe model servers and (unless the MLflow chart makes one) a ServiceMonitor."""
    cloud_cluster(config)
    interval = config.monitoring.prometheus.scrape_interval
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": MONITORING_API,
            "kind": "PodMonitor",
            "metadata": {
                "name": "ai-how-model-servers",
                "namespace": config.mlops.serving.namespace,
                "labels": dict(MANAGED_BY),
            },
            "spec": {
                "selector": {
                    "matchLabels": {"component": "predictor"},
                    "matchExpressions": [{"key": KSERVE_ISVC_LABEL, "operator": "Exists"}],
                },
                "podMetricsEndpoints": [
                    {
                        "portNumber": SERVER_PORT,
                        "path": "/metrics",
                        "interval": interval,
                        "relabelings": [
                            _job_relabeling(m.JOB_MODEL_SERVERS),
                            {
                                "sourceLabels": [
                                    "__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"
                                ],
                                "targetLabel": m.MODEL_TARGET_LABEL,
                            },
                        ],
                    }
                ],
            },
        }
    ]
    kube = config.mlops.kubernetes
    if config.mlops.mlflow.enabled and not kube.service_monitors:
        objects.append(
            {
                "apiVersion": MONITORING_API,
                "kind": "ServiceMonitor",
                "metadata": {
                    "name": "ai-how-mlflow",
                    "namespace": kube.namespace,
                    "labels": dict(MANAGED_BY),
                },
                "spec": {
                    "selector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "mlflow",
                            "app.kubernetes.io/instance": MLFLOW_RELEASE,
                        }
                    },
                    "endpoints": [
                        {
                            "port": "http",
                            "path": "/metrics",
                            "interval": interval,
                            "relabelings": [_job_relabeling(m.JOB_MLFLOW)],
                        }
                    ],
                },
            }
        )
    return objects


def dashboard_configmaps(config: ClusterConfig, boards: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The dashboards as ConfigMaps Grafana's sidecar loads (label ``grafana_dashboard: "1"``)."""
    import json

    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"ai-how-dashboard-{stem}",
                "namespace": _namespace(config),
                "labels": {**MANAGED_BY, DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE},
            },
            "data": {f"ai-how-{stem}.json": json.dumps(board, indent=2, sort_keys=True)},
        }
        for stem, board in boards.items()
    ]


def alertmanager_config_secret(config: ClusterConfig) -> dict[str, Any]:
    """The Secret kube-prometheus-stack's Alertmanager reads its configuration from; it holds file paths
    of the receiver secrets, never their values."""
    document = alertmanager_config(config.monitoring, cloud_secrets_dir())
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": ALERTMANAGER_CONFIG_SECRET,
            "namespace": _namespace(config),
            "labels": dict(MANAGED_BY),
        },
        "stringData": {"alertmanager.yaml": yaml.safe_dump(document, sort_keys=False)},
    }
