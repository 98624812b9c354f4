"""What one cluster needs from libvirt, computed from the config alone (no libvirt import).

Names, MAC addresses and paths are derived here once; the XML renderers, the host checks, the
lifecycle and ``--dry-run`` all read the same :class:`ClusterDefinition`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ai_how.config.envexpand import YamlPath
from ai_how.config.loader import LoadedConfig
from ai_how.config.models import PCIeDevice
from ai_how.config.topology import ClusterSide, iter_vms
from ai_how.errors import AiHowError
from ai_how.layout import Layout

# Every libvirt object ai-how creates carries this prefix, and domains carry our metadata element.
NAME_PREFIX = "aihow"
METADATA_NS = "https://ai-how.dev/xmlns/libvirt/1"
METADATA_PREFIX = "aihow"
SYSTEM_LOG_DIR = Path("/var/log/libvirt/qemu")


@dataclass(frozen=True)
class VMDefinition:
    name: str  # the libvirt domain name and the guest's hostname
    role: str
    cpu_cores: int
    memory_mib: int
    disk_gb: int
    ip_address: IPv4Address
    mac: str
    hostdevs: tuple[PCIeDevice, ...]
    volume: str  # the qcow2 overlay's name in the cluster's pool
    seed_volume: str  # the NoCloud seed ISO, a raw volume in the pool (libvirt owns the pool's files)
    console_log: Path  # the serial console, written by QEMU
    path: YamlPath  # where the VM is in the config (for findings)

    @property
    def gpus(self) -> tuple[PCIeDevice, ...]:
        return tuple(d for d in self.hostdevs if d.device_type == "gpu")


@dataclass(frozen=True)
class ClusterDefinition:
    side: ClusterSide
    name: str  # the cluster's name in the config
    config_path: Path
    network: str  # libvirt network name
    bridge: str
    subnet: IPv4Network
    gateway: IPv4Address
    nameservers: tuple[IPv4Address, ...]
    pool: str  # libvirt storage pool name
    pool_dir: Path  # the base image's copy, overlays and seeds: every disk QEMU opens
    base_image: Path  # the built image on the host; start copies it into the pool once
    workdir: Path  # ai-how's own files for this cluster: SSH key, known_hosts, logs, playbooks
    vms: tuple[VMDefinition, ...]

    @property
    def ssh_key(self) -> Path:
        return self.workdir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "ssh" / "known_hosts"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"


def mac_address(cluster: str, vm: str) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range, from the cluster and VM names."""
    digest = hashlib.sha256(f"{cluster}/{vm}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def base_image_role(side: ClusterSide) -> str:
    """The ``ai-how image build`` role whose image a cluster side boots."""
    return "hpc-base" if side == "hpc" else "cloud-base"


def resolve_base_image(loaded: LoadedConfig, side: ClusterSide) -> Path:
    """The cluster's ``base_image_path``: relative paths are relative to the config file's folder."""
    cluster = getattr(loaded.config.clusters, side)
    field = f"clusters.{side}.base_image_path"
    role = base_image_role(side)
    if cluster is None or cluster.base_image_path is None:
        raise AiHowError(
            f"{loaded.path}: {field} is not set",
            fix=f"build one with `ai-how image build {role}` and set {field} to its .qcow2",
        )
    path = Path(cluster.base_image_path).expanduser()
    # Resolved through links: overlays are backed by the content-addressed file, so a later
    # `image build` that moves the `<role>.qcow2` link never changes a VM's backing file.
    return (path if path.is_absolute() else loaded.path.parent / path).resolve()


def default_pool_dir(uri: str, cluster_name: str, layout: Layout, side: ClusterSide) -> Path:
    """Where a cluster's disks go: libvirt's image folder for the system daemon (its QEMU user can
    reach it), the state directory otherwise (session daemon, test driver)."""
    if uri.startswith("qemu:///system"):
        return Path("/var/lib/libvirt/images") / f"{NAME_PREFIX}-{cluster_name}"
    return layout.cluster_dir(side) / "pool"


def cluster_definition(
    loaded: LoadedConfig, side: ClusterSide, layout: Layout, *, uri: str, pool_dir: Path | None = None
) -> ClusterDefinition:
    """Everything libvirt needs for one side of the config (``hpc`` or ``cloud``)."""
    config = loaded.config
    cluster = getattr(config.clusters, side)
    if cluster is None:
        raise AiHowError(
            f"{loaded.path} has no clusters.{side} section",
            fix=f"add clusters.{side} with its VMs (see config/example-cluster.yaml)",
        )
    network = cluster.network
    records = [vm for vm in iter_vms(config) if vm.cluster == side]
    if network is None or not records:
        raise AiHowError(
            f"clusters.{side} in {loaded.path} defines no VMs",
            fix="add a controller/compute_nodes (hpc) or control_plane/worker_nodes (cloud) with a network",
        )
    workdir = layout.cluster_dir(side)
    pool_dir = (pool_dir or default_pool_dir(uri, cluster.name, layout, side)).expanduser().resolve()
    # QEMU of the system daemon writes where libvirt keeps its own guest logs; others in our state dir.
    console_dir = SYSTEM_LOG_DIR if uri.startswith("qemu:///system") else workdir / "logs"
    vms = tuple(
        VMDefinition(
            name=vm.name,
            role=vm.role,
            cpu_cores=vm.spec.cpu_cores,
            memory_mib=vm.spec.memory_gb * 1024,
            disk_gb=vm.spec.disk_gb,
            ip_address=vm.spec.ip_address,
            mac=mac_address(cluster.name, vm.name),
            hostdevs=tuple(vm.spec.passthrough_devices),
            volume=f"{vm.name}.qcow2",
            seed_volume=f"{vm.name}-seed.iso",
            console_log=console_dir / f"{vm.name}-console.log",
            path=vm.path,
        )
        for vm in records
    )
    dns = network.dns
    return ClusterDefinition(
        side=side,
        name=cluster.name,
        config_path=loaded.path,
        network=f"{NAME_PREFIX}-{cluster.name}",
        bridge=network.bridge,
        subnet=network.subnet,
        gateway=network.subnet.network_address + 1,
        nameservers=tuple(dns.nameservers) if dns is not None and dns.enabled else (),
        pool=f"{NAME_PREFIX}-{cluster.name}",
        pool_dir=pool_dir,
        base_image=resolve_base_image(loaded, side),
        workdir=workdir,
        vms=vms,
    )


def recorded_definition(side: ClusterSide, recorded: dict[str, str], layout: Layout) -> ClusterDefinition:
    """What ``destroy`` needs when the config no longer describes the cluster: the names and folders
    recorded at start (the journal itself says what to remove)."""
    name = recorded.get("name")
    if not name:
        raise AiHowError(f"no {side} cluster is recorded in the state", fix="nothing to destroy")
    return ClusterDefinition(
        side=side,
        name=name,
        config_path=Path(recorded.get("config", "")),
        network=f"{NAME_PREFIX}-{name}",
        bridge="",
        subnet=IPv4Network("0.0.0.0/32"),
        gateway=IPv4Address("0.0.0.0"),
        nameservers=(),
        pool=f"{NAME_PREFIX}-{name}",
        pool_dir=Path(recorded.get("pool_dir") or layout.cluster_dir(side) / "pool"),
        base_image=Path(),
        workdir=layout.cluster_dir(side),
        vms=(),
    )
