"""The VMs a config asks for, each with its cluster, role, final name and YAML path.

One enumeration shared by validation, planning and (later) provisioning, so that
names and paths are computed in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Literal

from ai_how.config.envexpand import YamlPath
from ai_how.config.models import ClusterConfig, VMSpec

ClusterSide = Literal["hpc", "cloud"]


@dataclass(frozen=True)
class VMRecord:
    cluster: ClusterSide
    cluster_name: str
    name: str
    role: str
    spec: VMSpec
    path: YamlPath
    auto_start: bool
    subnet: IPv4Network | None


def iter_vms(config: ClusterConfig) -> Iterator[VMRecord]:
    hpc = config.clusters.hpc
    if hpc is not None:
        subnet = hpc.network.subnet if hpc.network else None
        base: YamlPath = ("clusters", "hpc")
        if hpc.controller is not None:
            yield VMRecord(
                "hpc",
                hpc.name,
                hpc.controller.name or f"{hpc.name}-controller",
                "slurm-controller",
                hpc.controller,
                (*base, "controller"),
                hpc.auto_start,
                subnet,
            )
        for index, node in enumerate(hpc.compute_nodes):
            yield VMRecord(
                "hpc",
                hpc.name,
                node.name or f"{hpc.name}-compute-{index + 1:02d}",
                "slurm-compute",
                node,
                (*base, "compute_nodes", index),
                hpc.auto_start,
                subnet,
            )
    cloud = config.clusters.cloud
    if cloud is not None:
        base = ("clusters", "cloud")
        yield VMRecord(
            "cloud",
            cloud.name,
            cloud.control_plane.name or f"{cloud.name}-control-plane",
            "k8s-control-plane",
            cloud.control_plane,
            (*base, "control_plane"),
            cloud.auto_start,
            cloud.network.subnet,
        )
        for kind in ("cpu", "gpu"):
            for index, worker in enumerate(getattr(cloud.worker_nodes, kind)):
                yield VMRecord(
                    "cloud",
                    cloud.name,
                    worker.name or f"{cloud.name}-{kind}-worker-{index + 1}",
                    f"k8s-{kind}-worker",
                    worker,
                    (*base, "worker_nodes", kind, index),
                    cloud.auto_start,
                    cloud.network.subnet,
                )


def run_together(a: VMRecord, b: VMRecord) -> bool:
    """Whether two VMs can be running at the same time.

    VMs of one cluster always can. VMs of the two clusters can unless one side is
    ``auto_start: false``: that side is started only while the other is stopped
    (time-sharing, e.g. one GPU moved between training and inference).
    """
    if a.cluster == b.cluster:
        return True
    return a.auto_start and b.auto_start
