"""Checks before ``start`` creates anything: base image, names and bridge free, PCI devices present with
IOMMU on and not held by a host driver, enough memory and disk. Each failure is a Finding with the fix.

Devices are looked up through libvirt's node-device API (the host libvirt manages, also remote), and
memory through /proc/meminfo when the daemon is on this machine.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ai_how.config.findings import Finding, error, warning
from ai_how.provision.journal import Journal, Resource
from ai_how.provision.libvirt_conn import is_local_uri, is_running, is_test_uri, lookup, module
from ai_how.provision.spec import ClusterDefinition, VMDefinition, base_image_role

SYS_CLASS_NET = Path("/sys/class/net")
MEMINFO = Path("/proc/meminfo")
GIB = 1024**3


def check_base_image(cluster: ClusterDefinition) -> Iterator[Finding]:
    if not cluster.base_image.is_file():
        role = base_image_role(cluster.side)
        yield error(
            ("clusters", cluster.side, "base_image_path"),
            f"base image {cluster.base_image} does not exist",
            f"build it with `ai-how image build {role}` (or point base_image_path at an existing qcow2)",
            "host.base_image_missing",
        )


def check_names_free(cluster: ClusterDefinition, conn: Any, journal: Journal) -> Iterator[Finding]:
    """A domain, network or pool with one of our names that ai-how did not create is never adopted."""
    ours = set(journal.entries())
    for vm in cluster.vms:
        if Resource("domain", vm.name) not in ours and lookup(conn.lookupByName, vm.name) is not None:
            yield error(
                (*vm.path, "name"),
                f"a libvirt domain named {vm.name} already exists and was not created by ai-how",
                "rename the VM in the config, or remove the other domain yourself",
                "host.domain_exists",
            )
    side = ("clusters", cluster.side)
    if Resource("network", cluster.network) not in ours and lookup(conn.networkLookupByName, cluster.network):
        yield error(
            (*side, "name"),
            f"a libvirt network named {cluster.network} already exists and was not created by ai-how",
            "rename the cluster, or remove that network (`virsh net-undefine`)",
            "host.network_exists",
        )
    if Resource("pool", cluster.pool) not in ours and lookup(conn.storagePoolLookupByName, cluster.pool):
        yield error(
            (*side, "name"),
            f"a libvirt storage pool named {cluster.pool} already exists and was not created by ai-how",
            "rename the cluster, or remove that pool (`virsh pool-undefine`)",
            "host.pool_exists",
        )


def check_bridge_free(cluster: ClusterDefinition, conn: Any, journal: Journal, uri: str) -> Iterator[Finding]:
    path = ("clusters", cluster.side, "network", "bridge")
    fix = f"pick an unused bridge name for clusters.{cluster.side}.network.bridge (see `ip link`)"
    for network in conn.listAllNetworks():
        if network.name() == cluster.network:
            continue
        bridge = ET.fromstring(network.XMLDesc()).find("bridge")
        if bridge is not None and bridge.get("name") == cluster.bridge:
            yield error(
                path,
                f"bridge {cluster.bridge} is used by the libvirt network {network.name()}",
                fix,
                "host.bridge_busy",
            )
            return
    ours = Resource("network", cluster.network) in journal.entries()
    if is_local_uri(uri) and not ours and (SYS_CLASS_NET / cluster.bridge).exists():
        yield error(
            path, f"a network interface named {cluster.bridge} already exists", fix, "host.bridge_busy"
        )


def _pci_findings(vm: VMDefinition, index: int, conn: Any) -> Iterator[Finding]:
    device = vm.hostdevs[index]
    path = (*vm.path, "pcie_passthrough", "devices", index, "pci_address")
    name = "pci_" + device.pci_address.replace(":", "_").replace(".", "_")
    node = lookup(conn.nodeDeviceLookupByName, name)
    if node is None:
        yield error(
            path,
            f"{vm.name}: PCI device {device.pci_address} is not on this host",
            "check the address with `lspci -D` (or `virsh nodedev-list --cap pci`) and fix pci_address",
            "host.pci_missing",
        )
        return
    xml = ET.fromstring(node.XMLDesc())
    if xml.find("capability/iommuGroup") is None:
        yield error(
            path,
            f"{vm.name}: {device.pci_address} has no IOMMU group: IOMMU is off on this host",
            "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (or amd_iommu=on) iommu=pt",
            "host.iommu_off",
        )
    driver = xml.findtext("driver/name")
    if driver not in (None, "vfio-pci"):
        ids = f"{device.vendor_id}:{device.device_id}"
        yield error(
            path,
            f"{vm.name}: {device.pci_address} is bound to the host driver {driver}, not vfio-pci",
            f"bind it to vfio-pci: `driverctl set-override {device.pci_address} vfio-pci`, or boot with "
            f"vfio-pci.ids={ids} (and blacklist {driver})",
            "host.pci_not_vfio",
        )


def check_pci_devices(cluster: ClusterDefinition, conn: Any) -> Iterator[Finding]:
    for vm in cluster.vms:
        for index in range(len(vm.hostdevs)):
            yield from _pci_findings(vm, index, conn)


def available_memory_mib(conn: Any, uri: str) -> int:
    """Memory the host can give new VMs: MemAvailable here, else what the daemon reports free."""
    if is_local_uri(uri) and MEMINFO.is_file():
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    if is_test_uri(uri):  # the test driver's host: its declared memory, all free
        return int(conn.getInfo()[1])
    return int(conn.getFreeMemory()) // (1024 * 1024)


def check_capacity(cluster: ClusterDefinition, conn: Any, uri: str) -> Iterator[Finding]:
    to_start = [vm for vm in cluster.vms if not is_running(conn, vm.name)]
    need = sum(vm.memory_mib for vm in to_start)
    have = available_memory_mib(conn, uri)
    if need > have:
        yield error(
            ("clusters", cluster.side),
            f"starting {len(to_start)} VMs needs {need / 1024:.1f} GiB of memory; the host has "
            f"{have / 1024:.1f} GiB available",
            "stop other VMs or services, or lower memory_gb of the VMs",
            "host.memory",
        )
    probe = cluster.pool_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / GIB
    disk = sum(vm.disk_gb for vm in cluster.vms)
    if disk > free_gb:
        yield warning(
            ("clusters", cluster.side),
            f"the VMs' disks may grow to {disk} GB; {probe} has {free_gb:.0f} GB free "
            "(overlays are thin, so this only fails once the guests fill them)",
            "free disk space, lower disk_gb, or pass --pool-dir on a larger filesystem",
            "host.disk",
        )


def check_accelerator(uri: str, virt_type: str) -> Iterator[Finding]:
    if virt_type == "kvm" and is_local_uri(uri) and not Path("/dev/kvm").exists():
        yield error(
            ("clusters",),
            "/dev/kvm is missing: this host cannot run KVM guests",
            "enable virtualisation in the firmware and load kvm_intel/kvm_amd, or pass --virt-type qemu "
            "(software emulation, very slow)",
            "host.no_kvm",
        )


def preflight(
    cluster: ClusterDefinition, conn: Any, journal: Journal, *, uri: str, virt_type: str
) -> list[Finding]:
    """Every host check for starting ``cluster``; nothing is created by them."""
    module()  # libvirt-python is importable (else one line naming the extra)
    findings: list[Finding] = []
    findings += check_base_image(cluster)
    findings += check_names_free(cluster, conn, journal)
    findings += check_bridge_free(cluster, conn, journal, uri)
    findings += check_pci_devices(cluster, conn)
    findings += check_capacity(cluster, conn, uri)
    findings += check_accelerator(uri, virt_type)
    return findings
