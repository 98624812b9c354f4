"""``ai-how monitoring render``: every generated monitoring file, written to one folder, deterministically.

Layout (relative to the output folder)::

    prometheus/prometheus.yml            HPC-side / embedded Prometheus (rule files beside it)
    prometheus/rules/<group>.yml         recording and alert rules
    alertmanager/alertmanager.yml        routes by severity; receiver secrets by file reference
    grafana/dashboards/<name>.json       dashboards (schemaVersion 39)
    grafana/provisioning/dashboards/ai-how.yml, grafana/provisioning/datasources/ai-how.yml
    kubernetes/kube-prometheus-stack.values.yaml, prometheusrules.yaml, monitors.yaml,
    kubernetes/grafana-dashboards.yaml, alertmanager-config.yaml      (only with clusters.cloud)

No file holds a secret value: receivers name files that the stack (or a Kubernetes Secret) fills from the
environment variables the config names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ai_how.config.models import ClusterConfig
from ai_how.fsutil import atomic_write_text
from ai_how.monitoring import dashboards, kube_prometheus
from ai_how.monitoring.alertmanager_config import alertmanager_config
from ai_how.monitoring.prometheus_config import alertmanager_secrets_dir, prometheus_config
from ai_how.monitoring.rules import rule_groups, rules_file

DASHBOARDS_DIR = "grafana/dashboards"


def dump_yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1_000_000)


def dump_yaml_all(documents: Iterable[Any]) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False, allow_unicode=True, width=1_000_000)


def dump_json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class RenderedFile:
    path: str  # relative to the output folder
    text: str


def rendered_files(
    config: ClusterConfig, *, state_dir: Path, out_dir: Path, for_override: str | None = None
) -> list[RenderedFile]:
    """Every file, in a fixed order. ``state_dir`` locates the stack's targets and secret files;
    ``out_dir`` the dashboards folder Grafana's provisioning reads."""
    mon = config.monitoring
    files = [RenderedFile("prometheus/prometheus.yml", dump_yaml(prometheus_config(config, state_dir)))]
    files += [
        RenderedFile(f"prometheus/rules/{group.file_name}", dump_yaml(rules_file(group)))
        for group in rule_groups(mon, for_override=for_override)
    ]
    secrets = str(alertmanager_secrets_dir(state_dir))
    files.append(RenderedFile("alertmanager/alertmanager.yml", dump_yaml(alertmanager_config(mon, secrets))))
    boards = dashboards.dashboards(config)
    files += [
        RenderedFile(f"{DASHBOARDS_DIR}/{stem}.json", dump_json(board)) for stem, board in boards.items()
    ]
    provisioning = dashboards.dashboards_provisioning(str((out_dir / DASHBOARDS_DIR).resolve()))
    files += [
        RenderedFile("grafana/provisioning/dashboards/ai-how.yml", dump_yaml(provisioning)),
        RenderedFile(
            "grafana/provisioning/datasources/ai-how.yml",
            dump_yaml(dashboards.datasources_provisioning(config)),
        ),
    ]
    if config.clusters.cloud is not None:
        files += [
            RenderedFile(
                "kubernetes/kube-prometheus-stack.values.yaml", dump_yaml(kube_prometheus.values(config))
            ),
            RenderedFile(
                "kubernetes/prometheusrules.yaml",
                dump_yaml_all(kube_prometheus.prometheus_rules(config, for_override=for_override)),
            ),
            RenderedFile("kubernetes/monitors.yaml", dump_yaml_all(kube_prometheus.monitors(config))),
            RenderedFile(
                "kubernetes/grafana-dashboards.yaml",
                dump_yaml_all(kube_prometheus.dashboard_configmaps(config, boards)),
            ),
            RenderedFile(
                "kubernetes/alertmanager-config.yaml",
                dump_yaml(kube_prometheus.alertmanager_config_secret(config)),
            ),
        ]
    return files


def write_render(
    config: ClusterConfig, out_dir: Path, *, state_dir: Path, for_override: str | None = None
) -> list[Path]:
    """Write :func:`rendered_files` under ``out_dir``; returns the paths written."""
    written = []
    for item in rendered_files(config, state_dir=state_dir, out_dir=out_dir, for_override=for_override):
        path = out_dir / item.path
        atomic_write_text(path, item.text)
        written.append(path)
    return written
