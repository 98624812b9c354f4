"""libvirt XML for a cluster's network, storage pool, disk volumes and domains (built with ElementTree).

One renderer per libvirt object, all from :mod:`ai_how.provision.spec`; ``--dry-run`` prints exactly
what ``start`` defines.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Literal

from ai_how.config.models import PCIeDevice
from ai_how.provision.spec import METADATA_NS, METADATA_PREFIX, ClusterDefinition, VMDefinition

VirtType = Literal["kvm", "qemu", "test"]
GIB = 1024**3


def _text(parent: ET.Element, tag: str, text: str, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    element.text = text
    return element


def _dump(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def network_xml(cluster: ClusterDefinition) -> str:
    """A NAT network on the config's bridge and subnet with one static DHCP lease per VM.

    No dynamic range: every address on the network is one the config assigned, so a lease can never
    collide with a VM's address.
    """
    root = ET.Element("network")
    _text(root, "name", cluster.network)
    ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(root, "bridge", name=cluster.bridge, stp="on", delay="0")
    if cluster.nameservers:
        dns = ET.SubElement(root, "dns")
        for server in cluster.nameservers:
            ET.SubElement(dns, "forwarder", addr=str(server))
    ip = ET.SubElement(root, "ip", address=str(cluster.gateway), netmask=str(cluster.subnet.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    for vm in cluster.vms:
        ET.SubElement(dhcp, "host", mac=vm.mac, name=vm.name, ip=str(vm.ip_address))
    return _dump(root)


def pool_xml(cluster: ClusterDefinition) -> str:
    root = ET.Element("pool", type="dir")
    _text(root, "name", cluster.pool)
    target = ET.SubElement(root, "target")
    _text(target, "path", str(cluster.pool_dir))
    return _dump(root)


def raw_volume_xml(name: str, size_bytes: int) -> str:
    """A raw volume of exactly ``size_bytes`` that ai-how then fills by upload (the base image, a seed)."""
    root = ET.Element("volume", type="file")
    _text(root, "name", name)
    _text(root, "capacity", str(size_bytes), unit="bytes")
    _text(root, "allocation", "0", unit="bytes")
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type="raw")
    return _dump(root)


def overlay_volume_xml(vm: VMDefinition, backing_path: str) -> str:
    """A qcow2 overlay of ``disk_gb`` on the pool's copy of the base image (copy-on-write: the base is
    never written)."""
    root = ET.Element("volume", type="file")
    _text(root, "name", vm.volume)
    _text(root, "capacity", str(vm.disk_gb * GIB), unit="bytes")
    _text(root, "allocation", "0", unit="bytes")  # thin: blocks are taken as the guest writes
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type="qcow2")
    backing = ET.SubElement(root, "backingStore")
    _text(backing, "path", backing_path)
    ET.SubElement(backing, "format", type="qcow2")
    return _dump(root)


def _pci_source(parent: ET.Element, device: PCIeDevice) -> None:
    domain, bus, rest = device.pci_address.split(":")
    slot, function = rest.split(".")
    source = ET.SubElement(parent, "source")
    ET.SubElement(
        source,
        "address",
        domain=f"0x{domain}",
        bus=f"0x{bus}",
        slot=f"0x{slot}",
        function=f"0x{function}",
    )


def domain_xml(cluster: ClusterDefinition, vm: VMDefinition, *, virt_type: VirtType = "kvm") -> str:
    """A q35 guest: the config's vCPUs and RAM, virtio disk and NIC, the seed as a second disk, a serial
    console to a file, the guest agent channel, and one managed PCI hostdev per passed-through function
    (a GPU's audio function included: validation requires the whole IOMMU group).

    ``kvm`` gets ``host-passthrough`` CPU; ``qemu`` (TCG, no KVM) keeps QEMU's default model, which is
    all TCG can emulate.
    """
    root = ET.Element("domain", type=virt_type)
    _text(root, "name", vm.name)
    _text(root, "title", f"ai-how {cluster.side} cluster {cluster.name}: {vm.role}")
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(
        metadata,
        f"{{{METADATA_NS}}}vm",
        {"cluster": cluster.side, "cluster-name": cluster.name, "role": vm.role},
    )
    _text(root, "memory", str(vm.memory_mib), unit="MiB")
    _text(root, "currentMemory", str(vm.memory_mib), unit="MiB")
    _text(root, "vcpu", str(vm.cpu_cores), placement="static")
    os_el = ET.SubElement(root, "os")
    _text(os_el, "type", "hvm", arch="x86_64", machine="q35")
    ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if virt_type == "kvm":
        ET.SubElement(root, "cpu", mode="host-passthrough", check="none", migratable="off")
    _text(root, "on_poweroff", "destroy")
    _text(root, "on_reboot", "restart")
    _text(root, "on_crash", "destroy")
    devices = ET.SubElement(root, "devices")

    disk = ET.SubElement(devices, "disk", type="volume", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    ET.SubElement(disk, "source", pool=cluster.pool, volume=vm.volume)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")

    # The seed is a read-only virtio disk, not a SATA CD-ROM: Debian's cloud kernel has no AHCI driver,
    # so a CD-ROM would be invisible and cloud-init would find no datasource (and not run at all).
    seed = ET.SubElement(devices, "disk", type="volume", device="disk")
    ET.SubElement(seed, "driver", name="qemu", type="raw")
    ET.SubElement(seed, "source", pool=cluster.pool, volume=vm.seed_volume)
    ET.SubElement(seed, "target", dev="vdb", bus="virtio")
    ET.SubElement(seed, "readonly")

    nic = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(nic, "mac", address=vm.mac)
    ET.SubElement(nic, "source", network=cluster.network)
    ET.SubElement(nic, "model", type="virtio")

    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(vm.console_log))
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="file")
    ET.SubElement(console, "source", path=str(vm.console_log))
    ET.SubElement(console, "target", type="serial", port="0")

    agent = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(agent, "target", type="virtio", name="org.qemu.guest_agent.0")
    rng = ET.SubElement(devices, "rng", model="virtio")
    _text(rng, "backend", "/dev/urandom", model="random")

    for device in vm.hostdevs:
        hostdev = ET.SubElement(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
        _pci_source(hostdev, device)
    return _dump(root)


ET.register_namespace(METADATA_PREFIX, METADATA_NS)
