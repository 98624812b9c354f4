"""The monitoring services ``ai-how stack up`` runs on this machine when ``monitoring.prometheus.enabled``.

Real Prometheus, Alertmanager and node exporter (Debian's packages) and ai-how's SLURM and pipeline
exporters, as stack services with pid files and logs like MLflow's. Their configuration is rendered
into ``<state>/monitoring/config/`` at every ``stack up`` (the same files ``ai-how monitoring render``
writes); the TSDB and Alertmanager's silences live in ``<state>/monitoring/{prometheus,alertmanager}``
and persist across ``stack down``/``up``. The model servers Prometheus scrapes are published by the
local deployer in a file_sd file as they come and go.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.layout import Layout
from ai_how.monitoring.prometheus_config import (
    alertmanager_secrets_dir,
    model_servers_targets_file,
    monitoring_state_dir,
)

if TYPE_CHECKING:
    from ai_how.stack.services import Service

PROMETHEUS_BIN = "prometheus"
ALERTMANAGER_BIN = "prometheus-alertmanager"  # Debian's name for alertmanager
NODE_EXPORTER_BIN = "prometheus-node-exporter"
URL_FILE_SINCE = (0, 26)  # Alertmanager reads webhook URLs from files (url_file) from 0.26 on


def config_dir(layout: Layout) -> Path:
    return monitoring_state_dir(layout.root) / "config"


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AiHowError(
            f"{name} is not installed, and monitoring.prometheus.enabled asks for it",
            fix=f"apt-get install {package} (`make setup` does), or set monitoring.prometheus.enabled: false",
        )
    return found


def _version(binary: str) -> tuple[int, int]:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=30)
    match = re.search(r"version (\d+)\.(\d+)", done.stdout + done.stderr)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _alertmanager_config(config: ClusterConfig, layout: Layout, rendered: Path) -> Path:
    """The file Alertmanager loads. Its receivers' secrets are files written from their environment
    variables (0600). Alertmanager before 0.26 (Debian 12 ships 0.25) cannot read a webhook URL from a
    file: for it, a private 0600 copy with the URLs inlined is written beside those files instead."""
    from ai_how.monitoring.alertmanager_config import write_secret_files

    secrets = alertmanager_secrets_dir(layout.root)
    write_secret_files(config.monitoring, secrets)
    document: dict[str, Any] = yaml.safe_load(rendered.read_text())
    webhooks = [w for r in document.get("receivers", []) for w in r.get("webhook_configs", [])]
    private = _private_alertmanager_config(layout)
    if not webhooks or _version(_binary(ALERTMANAGER_BIN, "prometheus-alertmanager")) >= URL_FILE_SINCE:
        private.unlink(missing_ok=True)  # services() loads the private copy whenever it exists
        return rendered
    for webhook in webhooks:
        webhook["url"] = Path(webhook.pop("url_file")).read_text().strip()
    fd = os.open(private.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump(document, sort_keys=False))
    os.replace(private.with_suffix(".tmp"), private)
    return private


def _private_alertmanager_config(layout: Layout) -> Path:
    return alertmanager_secrets_dir(layout.root) / "alertmanager.yml"


def prepare(config: ClusterConfig, layout: Layout) -> None:
    """Render the configuration for this start (the files :func:`services` points the daemons at)."""
    from ai_how.monitoring.render import write_render

    target = config_dir(layout)
    write_render(config, target, state_dir=layout.root, for_override=config.monitoring.alert_for)
    targets = model_servers_targets_file(layout.root)
    if not targets.exists():
        atomic_write_text(targets, "[]\n")  # the local deployer publishes servers as they start
    _alertmanager_config(config, layout, target / "alertmanager" / "alertmanager.yml")


def _url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def services(config: ClusterConfig, layout: Layout) -> list[Service]:
    """The monitoring services this config runs here (none unless monitoring.prometheus.enabled)."""
    from ai_how.stack.services import Service

    monitoring = config.monitoring
    if not monitoring.prometheus.enabled:
        return []
    state = monitoring_state_dir(layout.root)
    files = {
        "prometheus": config_dir(layout) / "prometheus" / "prometheus.yml",
        "alertmanager": config_dir(layout) / "alertmanager" / "alertmanager.yml",
    }
    private = _private_alertmanager_config(layout)
    if private.exists():
        files["alertmanager"] = private
    found: list[Service] = []
    exporters = monitoring.exporters
    if exporters.node_exporter:
        url = _url("127.0.0.1", exporters.node_exporter_port)
        found.append(
            Service(
                "node-exporter",
                [
                    _binary(NODE_EXPORTER_BIN, "prometheus-node-exporter"),
                    f"--web.listen-address=127.0.0.1:{exporters.node_exporter_port}",
                ],
                url,
                f"{url}/metrics",
                start_timeout_s=30,
            )
        )
    ai_how = [str(Path(sys.executable).parent / "ai-how"), "--state-dir", str(layout.root)]
    hpc = config.clusters.hpc
    if hpc is not None and hpc.scheduler == "slurm":
        url = _url("127.0.0.1", exporters.slurm_port)
        found.append(
            Service(
                "slurm-exporter",
                [*ai_how, "exporter", "slurm", "--host", "127.0.0.1", "--port", str(exporters.slurm_port)],
                url,
                f"{url}/metrics",
                start_timeout_s=60,
            )
        )
    url = _url("127.0.0.1", exporters.pipeline_port)
    found.append(
        Service(
            "pipeline-exporter",
            [
                *ai_how,
                "exporter",
                "pipeline",
                "--host",
                "127.0.0.1",
                "--port",
                str(exporters.pipeline_port),
            ],
            url,
            f"{url}/metrics",
            start_timeout_s=60,
        )
    )
    if monitoring.alertmanager.enabled:
        am = monitoring.alertmanager
        url = _url(am.host, am.port)
        found.append(
            Service(
                "alertmanager",
                [
                    _binary(ALERTMANAGER_BIN, "prometheus-alertmanager"),
                    f"--config.file={files['alertmanager']}",
                    f"--storage.path={state / 'alertmanager'}",
                    f"--web.listen-address={am.host}:{am.port}",
                    "--cluster.listen-address=",  # one instance: no gossip port
                ],
                url,
                f"{url}/-/ready",
                start_timeout_s=60,
                reload_url=f"{url}/-/reload",
            )
        )
    prom = monitoring.prometheus
    url = _url(prom.host, prom.port)
    found.append(
        Service(
            "prometheus",
            [
                _binary(PROMETHEUS_BIN, "prometheus"),
                f"--config.file={files['prometheus']}",
                f"--storage.tsdb.path={state / 'prometheus'}",
                f"--storage.tsdb.retention.time={prom.retention}",
                f"--web.listen-address={prom.host}:{prom.port}",
                "--web.enable-lifecycle",  # POST /-/reload after a config change
            ],
            url,
            f"{url}/-/ready",
            start_timeout_s=90,
            reload_url=f"{url}/-/reload",
            describe=functools.partial(targets_summary, url),
        )
    )
    return found


def targets_health(targets: list[dict[str, Any]]) -> tuple[str, bool]:
    """(``3/4 targets up; down: slurm 127.0.0.1:9341 (connection refused)``, whether all are up) from
    the active targets Prometheus' ``/api/v1/targets`` lists."""
    down = [t for t in targets if t.get("health") != "up"]
    summary = f"{len(targets) - len(down)}/{len(targets)} targets up"
    if down:
        summary += "; down: " + ", ".join(
            f"{t['labels'].get('job')} {t['labels'].get('instance')} ({t.get('lastError') or t.get('health')})"
            for t in down
        )
    return summary, not down


def targets_summary(prometheus_url: str) -> str:
    """What `stack status` says of a running Prometheus: :func:`targets_health`'s summary."""
    try:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/targets?state=active", timeout=3) as response:
            targets = json.load(response)["data"]["activeTargets"]
    except (OSError, ValueError, KeyError) as exc:
        return f"targets unknown: {exc}"
    return targets_health(targets)[0]


def publish_model_servers(layout: Layout, servers: list[tuple[str, str, str, int]]) -> None:
    """Write the file_sd targets Prometheus scrapes: (role, model, host:port, version) per server."""
    groups: dict[str, dict[str, Any]] = {}
    for role, model, address, version in servers:
        labels = (
            {"role": role}
            if role == "production"
            else {"role": role, "model": model, "version": str(version)}
        )
        key = f"{address}|{sorted(labels.items())}"
        groups.setdefault(key, {"targets": [address], "labels": labels})
    atomic_write_text(
        model_servers_targets_file(layout.root), json.dumps(list(groups.values()), sort_keys=True) + "\n"
    )
