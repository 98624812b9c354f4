"""Resource-allocation plan: which VM gets which cores, RAM, disk and GPUs, and what the host must hold."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ai_how.config.host import HostResources
from ai_how.config.models import ClusterConfig, PCIeDevice
from ai_how.config.topology import VMRecord, iter_vms, run_together


@dataclass
class VMPlan:
    cluster: str
    name: str
    role: str
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    ip_address: str
    auto_start: bool
    gpus: list[str] = field(default_factory=list)
    shared_gpus: list[str] = field(default_factory=list)


@dataclass
class ClusterTotals:
    cluster: str
    name: str
    auto_start: bool
    vms: int
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    gpus: int


@dataclass
class Usage:
    """Resources needed by one set of clusters that run at the same time."""

    clusters: list[str]
    cpu_cores: int
    memory_gb: int
    disk_gb: int


@dataclass
class GpuShare:
    pci_address: str
    label: str
    holders: list[str]  # "cluster/vm"
    time_shared: bool  # True: the holders never run together


@dataclass
class ResourcePlan:
    name: str
    host: HostResources
    vms: list[VMPlan]
    clusters: list[ClusterTotals]
    scenarios: list[Usage]
    gpu_shares: list[GpuShare]

    @property
    def peak(self) -> Usage:
        """The most demanding set of clusters that can run at once (by cores, then RAM, then disk)."""
        if not self.scenarios:
            return Usage([], 0, 0, 0)
        return max(self.scenarios, key=lambda u: (u.cpu_cores, u.memory_gb, u.disk_gb))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["host"]["pcie_devices"] = [d.model_dump() for d in self.host.pcie_devices]
        data["peak"] = asdict(self.peak)
        return data


def device_label(device: PCIeDevice) -> str:
    return f"{device.pci_address} ({device.label})" if device.label else device.pci_address


def _scenarios(totals: list[ClusterTotals]) -> list[Usage]:
    """Clusters with auto_start run together; an auto_start: false cluster runs only alone."""
    together = [t for t in totals if t.auto_start]
    groups = ([together] if together else []) + [[t] for t in totals if not t.auto_start]
    return [
        Usage(
            [t.cluster for t in group],
            sum(t.cpu_cores for t in group),
            sum(t.memory_gb for t in group),
            sum(t.disk_gb for t in group),
        )
        for group in groups
    ]


def gpu_holders(vms: list[VMRecord]) -> dict[str, list[tuple[VMRecord, PCIeDevice]]]:
    holders: dict[str, list[tuple[VMRecord, PCIeDevice]]] = defaultdict(list)
    for vm in vms:
        for device in vm.spec.gpus:
            holders[device.pci_address].append((vm, device))
    return holders


def build_plan(config: ClusterConfig, host: HostResources) -> ResourcePlan:
    vms = list(iter_vms(config))
    shares: list[GpuShare] = []
    shared_by_vm: dict[str, list[str]] = defaultdict(list)
    for address, held in gpu_holders(vms).items():
        if len(held) < 2:
            continue
        records = [vm for vm, _ in held]
        concurrent = any(run_together(a, b) for i, a in enumerate(records) for b in records[i + 1 :])
        label = next((d.label for _, d in held if d.label), "") or ""
        shares.append(GpuShare(address, label, [f"{vm.cluster}/{vm.name}" for vm in records], not concurrent))
        for vm in records:
            shared_by_vm[f"{vm.cluster}/{vm.name}"].append(address)

    plans = [
        VMPlan(
            cluster=vm.cluster,
            name=vm.name,
            role=vm.role,
            cpu_cores=vm.spec.cpu_cores,
            memory_gb=vm.spec.memory_gb,
            disk_gb=vm.spec.disk_gb,
            ip_address=str(vm.spec.ip_address),
            auto_start=vm.auto_start,
            gpus=[device_label(d) for d in vm.spec.gpus],
            shared_gpus=shared_by_vm.get(f"{vm.cluster}/{vm.name}", []),
        )
        for vm in vms
    ]
    totals: list[ClusterTotals] = []
    for side, cluster in (("hpc", config.clusters.hpc), ("cloud", config.clusters.cloud)):
        if cluster is None:
            continue
        mine = [p for p in plans if p.cluster == side]
        totals.append(
            ClusterTotals(
                cluster=side,
                name=cluster.name,
                auto_start=cluster.auto_start,
                vms=len(mine),
                cpu_cores=sum(p.cpu_cores for p in mine),
                memory_gb=sum(p.memory_gb for p in mine),
                disk_gb=sum(p.disk_gb for p in mine),
                gpus=sum(len(p.gpus) for p in mine),
            )
        )
    return ResourcePlan(config.metadata.name, host, plans, totals, _scenarios(totals), shares)
