"""What the workstation offers: from ``host:`` in the config, or measured on this machine."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ai_how.config.models import ClusterConfig, PCIeDevice

SYSFS_IOMMU_GROUPS = Path("/sys/kernel/iommu_groups")

# PCI class prefixes (class/subclass) -> device_type
_PCI_CLASSES = {
    "0x0300": "gpu",
    "0x0302": "gpu",
    "0x0403": "audio",
    "0x0c03": "usb",
    "0x0108": "nvme",
    "0x0200": "network",
}


@dataclass(frozen=True)
class HostResources:
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    source: Literal["config", "detected"]
    pcie_devices: list[PCIeDevice] = field(default_factory=list)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def scan_pci_inventory(root: Path = SYSFS_IOMMU_GROUPS) -> list[PCIeDevice]:
    """PCI functions with their IOMMU group, from sysfs (empty where IOMMU is off or in a container)."""
    devices: list[PCIeDevice] = []
    if not root.is_dir():
        return devices
    for group_dir in sorted(root.iterdir()):
        if not group_dir.name.isdigit():
            continue
        for dev in sorted((group_dir / "devices").glob("*")):
            vendor, device = _read(dev / "vendor"), _read(dev / "device")
            if not (vendor.startswith("0x") and device.startswith("0x")):
                continue
            cls = _read(dev / "class")[:6]
            try:
                devices.append(
                    PCIeDevice(
                        pci_address=dev.name,
                        device_type=_PCI_CLASSES.get(cls, "other"),
                        vendor_id=vendor[2:],
                        device_id=device[2:],
                        iommu_group=int(group_dir.name),
                    )
                )
            except ValueError:
                continue
    return devices


def detect_host(disk_path: Path) -> HostResources:
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    probe = disk_path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    disk = shutil.disk_usage(probe).total
    gib = 1024**3
    return HostResources(cores, memory // gib, disk // gib, "detected", scan_pci_inventory())


def host_resources(config: ClusterConfig, disk_path: Path) -> HostResources:
    """The host the config describes, or this machine when the config has no ``host:``."""
    if config.host is not None:
        h = config.host
        return HostResources(h.cpu_cores, h.memory_gb, h.disk_gb, "config", list(h.pcie_devices))
    return detect_host(disk_path)
