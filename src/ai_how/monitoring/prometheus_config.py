"""``prometheus.yml`` of the HPC-side (embedded) Prometheus, and the cloud side's federation scrape job.

HPC side: scrape jobs ``prometheus``, ``alertmanager``, ``node``, ``mlflow``, ``model-servers`` (file_sd:
the stack writes ``<state>/monitoring/targets/model-servers.json``), ``slurm`` and ``pipeline``; every
series gets the ``cluster`` label of its side (target label and external label), the rule files beside
it, and alerts go to the configured Alertmanager. Cloud side: ``federate-hpc`` pulls the HPC side's
series through ``/federate`` with ``honor_labels`` and the configured ``match[]`` selectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ai_how.config.models import ClusterConfig, Monitoring
from ai_how.errors import AiHowError
from ai_how.monitoring import metrics_catalog as m

RULES_GLOB = "rules/*.yml"  # relative to prometheus.yml (Prometheus resolves it from the file's folder)
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


# --------------------------------------------------------------------------- names and paths


def hpc_cluster_label(config: ClusterConfig) -> str:
    """The ``cluster`` label of the HPC side (workstation): the external label if set, else its name."""
    given = config.monitoring.prometheus.external_labels.get(m.CLUSTER_LABEL)
    if given:
        return given
    return config.clusters.hpc.name if config.clusters.hpc is not None else config.metadata.name


def cloud_cluster_label(config: ClusterConfig) -> str | None:
    """The ``cluster`` label of the cloud side, or None when the config has no cloud cluster."""
    return config.clusters.cloud.name if config.clusters.cloud is not None else None


def monitoring_state_dir(state_dir: Path) -> Path:
    """Where the embedded stack keeps its monitoring files (targets, secrets, TSDB)."""
    return state_dir / "monitoring"


def model_servers_targets_file(state_dir: Path) -> Path:
    """The file_sd JSON file listing model servers (``[{"targets": [...], "labels": {"model": ...}}]``)."""
    return monitoring_state_dir(state_dir) / "targets" / "model-servers.json"


def alertmanager_secrets_dir(state_dir: Path) -> Path:
    """Where the stack writes webhook URLs and SMTP passwords from their environment variables."""
    return monitoring_state_dir(state_dir) / "secrets"


# --------------------------------------------------------------------------- HPC side


def _target(host: str, port: int) -> str:
    reachable = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"[{reachable}]:{port}" if ":" in reachable else f"{reachable}:{port}"


def _static_job(name: str, targets: list[str], cluster: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_name": name,
        **extra,
        "static_configs": [{"targets": targets}],
        "relabel_configs": [_cluster_relabel(cluster)],
    }


def _cluster_relabel(cluster: str) -> dict[str, str]:
    return {"target_label": m.CLUSTER_LABEL, "replacement": cluster}


def _mlflow_target(config: ClusterConfig) -> tuple[str, str] | None:
    """(scheme, host:port) of MLflow, or None when no MLflow is configured."""
    mlflow = config.mlops.mlflow
    if not mlflow.enabled:
        return None
    if mlflow.tracking_uri:
        parts = urlsplit(mlflow.tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None  # file:/sqlite: tracking has no server to scrape
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.scheme, _target(parts.hostname, port)
    return "http", _target(mlflow.host, mlflow.port)


def _node_targets(config: ClusterConfig) -> list[str]:
    """This machine, plus the HPC VMs (they run node exporter from their image)."""
    port = config.monitoring.exporters.node_exporter_port
    targets = [_target("127.0.0.1", port)]
    hpc = config.clusters.hpc
    if hpc is not None:
        vms = ([hpc.controller] if hpc.controller else []) + list(hpc.compute_nodes)
        targets += [_target(str(vm.ip_address), port) for vm in vms]
    return targets


def scrape_configs(config: ClusterConfig, state_dir: Path) -> list[dict[str, Any]]:
    mon = config.monitoring
    cluster = hpc_cluster_label(config)
    jobs = [_static_job(m.JOB_PROMETHEUS, [_target(mon.prometheus.host, mon.prometheus.port)], cluster)]
    if mon.alertmanager.enabled:
        target = _target(mon.alertmanager.host, mon.alertmanager.port)
        jobs.append(_static_job(m.JOB_ALERTMANAGER, [target], cluster))
    if mon.exporters.node_exporter:
        jobs.append(_static_job(m.JOB_NODE, _node_targets(config), cluster))
    mlflow = _mlflow_target(config)
    if mlflow is not None:
        scheme, target = mlflow
        jobs.append(_static_job(m.JOB_MLFLOW, [target], cluster, scheme=scheme, metrics_path="/metrics"))
    jobs.append(
        {
            "job_name": m.JOB_MODEL_SERVERS,
            "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [str(model_servers_targets_file(state_dir))]}],
            "relabel_configs": [_cluster_relabel(cluster)],
        }
    )
    hpc = config.clusters.hpc
    if hpc is not None and hpc.scheduler == "slurm":
        jobs.append(_static_job(m.JOB_SLURM, [_target("127.0.0.1", mon.exporters.slurm_port)], cluster))
    jobs.append(_static_job(m.JOB_PIPELINE, [_target("127.0.0.1", mon.exporters.pipeline_port)], cluster))
    return jobs


def prometheus_config(config: ClusterConfig, state_dir: Path) -> dict[str, Any]:
    """The embedded / HPC-side ``prometheus.yml``."""
    mon = config.monitoring
    document: dict[str, Any] = {
        "global": {
            "scrape_interval": mon.prometheus.scrape_interval,
            "evaluation_interval": mon.prometheus.evaluation_interval,
            "external_labels": external_labels(mon, hpc_cluster_label(config)),
        },
        "rule_files": [RULES_GLOB],
    }
    if mon.alertmanager.enabled:
        target = _target(mon.alertmanager.host, mon.alertmanager.port)
        document["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    document["scrape_configs"] = scrape_configs(config, state_dir)
    return document


def external_labels(monitoring: Monitoring, cluster: str) -> dict[str, str]:
    return dict(sorted({**monitoring.prometheus.external_labels, m.CLUSTER_LABEL: cluster}.items()))


# --------------------------------------------------------------------------- cloud side


def federation_job(monitoring: Monitoring) -> dict[str, Any] | None:
    """The cloud Prometheus' scrape job that pulls the HPC side's series, or None when federation is off."""
    federation = monitoring.federation
    if not federation.enabled:
        return None
    if not federation.hpc_prometheus_url:
        raise AiHowError(
            "monitoring.federation.enabled is true but monitoring.federation.hpc_prometheus_url is not set",
            fix="set hpc_prometheus_url to the HPC-side Prometheus as the cloud cluster reaches it, "
            "e.g. http://192.168.100.1:9090",
        )
    if not federation.match:
        raise AiHowError(
            "monitoring.federation.match is empty: /federate returns nothing without a match[] selector",
            fix="list selectors, e.g. ['{job=~\"slurm|node|pipeline\"}', '{__name__=~\"job:.*\"}']",
        )
    url = urlsplit(federation.hpc_prometheus_url)
    return {
        "job_name": m.JOB_FEDERATE,
        "honor_labels": True,
        "metrics_path": f"{url.path.rstrip('/')}/federate",
        "scheme": url.scheme,
        "params": {"match[]": list(federation.match)},
        "static_configs": [{"targets": [url.netloc]}],
    }
