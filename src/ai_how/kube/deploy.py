"""``ai-how cloud deploy``: Kubernetes on the started cloud VMs with Kubespray, then ai-how's own add-ons.

Steps, each with progress and its own log under ``<state>/cloud/logs/``: inventory and group_vars from
the config → Kubespray at the pinned commit → its own venv → SSH to every node → ``cluster.yml`` →
the admin kubeconfig → every node Ready → labels/taints → ingress controller and GPU Operator (helm on
the control plane) → health. Every step is idempotent, so re-running continues or re-applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.config.loader import LoadedConfig
from ai_how.config.models import CloudCluster, ClusterConfig, Taint
from ai_how.errors import AiHowError
from ai_how.kube import gpu_operator
from ai_how.kube.health import ClusterHealth, apply_node_labels_taints, cluster_health, wait_nodes_ready
from ai_how.kube.helm import HelmChart, install_over_ssh
from ai_how.kube.ingress import ingress_chart, ingress_values
from ai_how.kube.kubespray import runner, source
from ai_how.kube.kubespray.inventory import write_inventory
from ai_how.kube.kubespray.releases import resolve_pin
from ai_how.layout import Layout
from ai_how.provision.spec import ClusterDefinition

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CloudPaths:
    """Where ``cloud deploy`` keeps its files (one place computes them)."""

    root: Path

    @property
    def inventory(self) -> Path:  # hosts.yaml + group_vars/, as a Kubespray user would recognise them
        return self.root / "kubespray"

    @property
    def artifacts(self) -> Path:  # Kubespray's artifacts_dir: admin.conf
        return self.root / "kubespray" / "artifacts"

    @property
    def sources(self) -> Path:  # Kubespray checkouts, one per tag
        return self.root / "kubespray-src"

    @property
    def venv(self) -> Path:  # Kubespray's own Python environment (its pinned ansible)
        return self.root / "kubespray-venv"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def addons(self) -> Path:  # values files of the helm releases ai-how installs
        return self.root / "addons"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def cloud_paths(layout: Layout) -> CloudPaths:
    return CloudPaths(layout.root / "cloud")


def kubeconfig_path(config: ClusterConfig, layout: Layout) -> Path:
    """The cluster's kubeconfig: the config's ``clusters.cloud.kubeconfig``, else the one deploy fetched."""
    cloud = config.clusters.cloud
    if cloud is not None and cloud.kubeconfig:
        return Path(cloud.kubeconfig).expanduser()
    return cloud_paths(layout).kubeconfig


def _cloud(config: ClusterConfig) -> CloudCluster:
    if config.clusters.cloud is None:
        raise AiHowError(
            "the config has no clusters.cloud section", fix="add the cloud cluster (see the example)"
        )
    return config.clusters.cloud


def _node_settings(config: ClusterConfig) -> dict[str, tuple[dict[str, str], list[Taint]]]:
    cloud = _cloud(config)
    workers = [*cloud.worker_nodes.cpu, *cloud.worker_nodes.gpu]
    return {w.name: (dict(w.node_labels), list(w.node_taints)) for w in workers if w.name}


def deploy(
    loaded: LoadedConfig,
    cluster: ClusterDefinition,
    layout: Layout,
    *,
    tags: Sequence[str] | None = None,
    limit: str | None = None,
    driver_in_image: bool = False,
    progress: Progress,
) -> ClusterHealth:
    config = loaded.config
    k8s = _cloud(config).kubernetes_config
    paths = cloud_paths(layout)
    inventory = write_inventory(config, paths.inventory, artifacts_dir=paths.artifacts)
    for note in inventory.notes:
        progress(f"note: {note}")

    progress(f"Kubespray {k8s.kubespray.version}")
    kubespray_dir = source.obtain(
        resolve_pin(k8s.kubespray),
        paths.sources,
        log_path=paths.logs / "kubespray-source.log",
        progress=progress,
    )
    bin_dir = source.ensure_venv(
        kubespray_dir, paths.venv, log_path=paths.logs / "kubespray-venv.log", progress=progress
    )
    progress("checking SSH to every node")
    runner.check_ssh(
        [(vm.name, vm.ip_address) for vm in cluster.vms],
        ssh_key=cluster.ssh_key,
        known_hosts=cluster.known_hosts,
        log_path=paths.logs / "ssh-check.log",
    )
    progress("running Kubespray's cluster.yml (a first run takes 15-30 minutes)")
    runner.run_cluster_yml(
        kubespray_dir,
        paths.inventory,
        ansible_bin_dir=bin_dir,
        ssh_key=cluster.ssh_key,
        known_hosts=cluster.known_hosts,
        artifacts_dir=paths.artifacts,
        tags=list(tags) if tags else None,
        limit=limit,
        log_path=paths.logs / "kubespray-cluster.log",
        on_event=progress,
    )
    control_plane = cluster.vms[0]
    kubeconfig = runner.fetch_kubeconfig(
        paths.artifacts, paths.kubeconfig, server=str(control_plane.ip_address)
    )
    progress(f"kubeconfig: {kubeconfig}")
    wait_nodes_ready(kubeconfig, [vm.name for vm in cluster.vms], timeout_s=900, progress=progress)
    apply_node_labels_taints(kubeconfig, _node_settings(config))
    _install_addons(config, cluster, paths, driver_in_image=driver_in_image, progress=progress)
    return cluster_health(kubeconfig)


def _install_addons(
    config: ClusterConfig,
    cluster: ClusterDefinition,
    paths: CloudPaths,
    *,
    driver_in_image: bool,
    progress: Progress,
) -> None:
    def install(chart: HelmChart, values: Mapping[str, Any]) -> None:
        install_over_ssh(
            chart,
            values,
            host=str(cluster.vms[0].ip_address),
            ssh_key=cluster.ssh_key,
            known_hosts=cluster.known_hosts,
            workdir=paths.addons,
            log_path=paths.logs / "helm.log",
            progress=progress,
        )

    chart = ingress_chart(config)
    if chart is not None:
        install(chart, ingress_values(config))
    if _cloud(config).kubernetes_config.gpu_operator.enabled:
        # The DCGM exporter's ServiceMonitor needs the Prometheus Operator's CRDs, which the monitoring
        # stack installs later; with it on and the CRDs absent, the operator skips GPU feature discovery.
        values = gpu_operator.gpu_operator_values(
            config, driver_in_image=driver_in_image, service_monitor=False
        )
        progress("GPU Operator: the DCGM ServiceMonitor stays off until the monitoring stack brings its CRDs")
        install(gpu_operator.GPU_OPERATOR, values)
