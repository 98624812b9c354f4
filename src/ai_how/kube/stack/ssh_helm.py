"""The Helm runner of ``stack up|down``: helm on the control-plane VM over SSH (no helm binary needed here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.config.loader import LoadedConfig
from ai_how.kube.deploy import cloud_paths
from ai_how.kube.helm import HelmChart, install_over_ssh, uninstall_over_ssh
from ai_how.layout import Layout
from ai_how.provision.libvirt_conn import default_uri
from ai_how.provision.spec import cluster_definition


@dataclass(frozen=True)
class SshHelm:
    host: str
    ssh_key: Path
    known_hosts: Path
    workdir: Path  # where values files are written before they are copied
    log_path: Path
    progress: Callable[[str], None]

    def install(self, chart: HelmChart, values: Mapping[str, Any]) -> None:
        install_over_ssh(
            chart,
            values,
            host=self.host,
            ssh_key=self.ssh_key,
            known_hosts=self.known_hosts,
            workdir=self.workdir,
            log_path=self.log_path,
            progress=self.progress,
        )

    def uninstall(self, chart: HelmChart) -> None:
        uninstall_over_ssh(
            chart,
            host=self.host,
            ssh_key=self.ssh_key,
            known_hosts=self.known_hosts,
            log_path=self.log_path,
            progress=self.progress,
        )


def ssh_helm(loaded: LoadedConfig, layout: Layout, progress: Callable[[str], None]) -> SshHelm:
    """helm on the cloud cluster's control plane, with the SSH key `cloud start` made."""
    cluster = cluster_definition(loaded, "cloud", layout, uri=default_uri())
    paths = cloud_paths(layout)
    return SshHelm(
        host=str(cluster.vms[0].ip_address),
        ssh_key=cluster.ssh_key,
        known_hosts=cluster.known_hosts,
        workdir=paths.addons,
        log_path=paths.logs / "stack-helm.log",
        progress=progress,
    )
