"""Stand-in hosts for libvirt's test driver: a node file with the host's PCI functions and IOMMU groups.

libvirt's own test driver (``test:///<node.xml>``) answers every call in the real API's shapes; the
node file gives it the PCI devices of a GPU workstation (the shape of ``virsh nodedev-dumpxml``).
A custom node file keeps its state per connection, so tests that span several calls share one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from ai_how.config.models import PCIeDevice

_CLASSES = {"gpu": "0x030000", "audio": "0x040300"}


def node_xml(devices: Iterable[PCIeDevice], *, iommu: bool = True, memory_gib: int = 256) -> str:
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, text in (
        ("mhz", "3000"),
        ("model", "x86_64"),
        ("active", "64"),
        ("nodes", "1"),
        ("sockets", "1"),
        ("cores", "32"),
        ("threads", "2"),
    ):
        ET.SubElement(cpu, tag).text = text
    ET.SubElement(node, "memory").text = str(memory_gib * 1024 * 1024)  # KiB
    for device in devices:
        domain, bus, rest = device.pci_address.split(":")
        slot, function = rest.split(".")
        dev = ET.SubElement(node, "device")
        ET.SubElement(dev, "name").text = "pci_" + device.pci_address.replace(":", "_").replace(".", "_")
        ET.SubElement(dev, "parent").text = "computer"
        cap = ET.SubElement(dev, "capability", type="pci")
        ET.SubElement(cap, "class").text = _CLASSES.get(device.device_type, "0x000000")
        for tag, value in (("domain", domain), ("bus", bus), ("slot", slot), ("function", function)):
            ET.SubElement(cap, tag).text = str(int(value, 16))
        ET.SubElement(cap, "product", id=f"0x{device.device_id}").text = device.label or "device"
        ET.SubElement(cap, "vendor", id=f"0x{device.vendor_id}").text = "NVIDIA Corporation"
        if iommu:
            group = ET.SubElement(cap, "iommuGroup", number=str(device.iommu_group))
            ET.SubElement(
                group,
                "address",
                domain=f"0x{domain}",
                bus=f"0x{bus}",
                slot=f"0x{slot}",
                function=f"0x{function}",
            )
    return ET.tostring(node, encoding="unicode")


def write_node(path: Path, devices: Iterable[PCIeDevice], **kwargs: object) -> str:
    """Write the node file and return its ``test://`` URI."""
    path.write_text(node_xml(devices, **kwargs))  # type: ignore[arg-type]
    return f"test://{path}"
