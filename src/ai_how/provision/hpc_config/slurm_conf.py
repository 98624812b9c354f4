"""``slurm.conf`` and ``gres.conf`` of the HPC VMs, rendered from the config through one typed structure.

:func:`slurm_cluster` turns ``clusters.hpc`` into a :class:`SlurmCluster` (and refuses what SLURM would
refuse at start-up, naming the config field); :func:`render_slurm_conf` and :func:`render_gres_conf`
are the only places that write SLURM's line format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ai_how.config.models import ClusterConfig
from ai_how.config.topology import iter_vms
from ai_how.errors import AiHowError

# The header every rendered file starts with (a person editing the file on a node sees where it came from).
MANAGED = "# Written by ai-how from the cluster config; changes here are overwritten by `ai-how hpc start`."

# SLURM's time formats: minutes, [days-]hours[:minutes[:seconds]], minutes:seconds, or no limit.
_MAX_TIME = re.compile(r"INFINITE|UNLIMITED|\d+(-\d+)?(:\d{1,2}){0,2}")
_GRES_NAME = re.compile(r"[a-z][a-z0-9_]*")

# Settings every ai-how SLURM cluster shares. Paths match Debian's units (PIDFile=/run/slurm*.pid).
# proctrack/linuxproc + task/none keep SLURM out of cgroups entirely: no cgroup.conf, no cgroup v2
# delegation to get right in the guest (../shared/notes/platform.md §7.5). GPUs are still assigned
# per job (CUDA_VISIBLE_DEVICES); they are not fenced off by a devices cgroup.
BASE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("SlurmUser", "slurm"),
    ("AuthType", "auth/munge"),
    ("StateSaveLocation", "/var/spool/slurmctld"),
    ("SlurmdSpoolDir", "/var/spool/slurmd"),
    ("SlurmctldPidFile", "/run/slurmctld.pid"),
    ("SlurmdPidFile", "/run/slurmd.pid"),
    ("SlurmctldLogFile", "/var/log/slurm/slurmctld.log"),
    ("SlurmdLogFile", "/var/log/slurm/slurmd.log"),
    ("ProctrackType", "proctrack/linuxproc"),
    ("TaskPlugin", "task/none"),
    ("SelectType", "select/cons_tres"),
    ("SelectTypeParameters", "CR_Core_Memory"),
    ("JobAcctGatherType", "jobacct_gather/none"),
    ("JobCompType", "jobcomp/filetxt"),
    ("JobCompLoc", "/var/log/slurm/jobcomp.log"),
    ("AccountingStorageType", "accounting_storage/none"),
    ("MpiDefault", "none"),
    # A node that rebooted or lost contact returns to service when it registers with a valid config.
    ("ReturnToService", "2"),
    # Finished jobs stay visible to `scontrol show job` for an hour (ai-how polls it; there is no slurmdbd).
    ("MinJobAge", "3600"),
)

# A partition made when the config lists none: every node, the default.
DEFAULT_PARTITION = "main"


@dataclass(frozen=True)
class SlurmNode:
    name: str
    address: str
    cpus: int
    real_memory_mib: int
    gpus: int


@dataclass(frozen=True)
class SlurmPartitionSpec:
    name: str
    nodes: tuple[str, ...]  # empty: every node
    default: bool
    max_time: str


@dataclass(frozen=True)
class SlurmCluster:
    name: str
    controller: str
    controller_address: str
    nodes: tuple[SlurmNode, ...]  # the hosts that run slurmd
    partitions: tuple[SlurmPartitionSpec, ...]
    gres_types: tuple[str, ...]

    @property
    def single_node(self) -> bool:
        """The controller is the only VM, so it runs slurmd too."""
        return [n.name for n in self.nodes] == [self.controller]

    @property
    def def_mem_per_cpu_mib(self) -> int:
        """A job without ``--mem`` gets its CPUs' share of the smallest node's memory, not the whole node."""
        return max(1, min(n.real_memory_mib // n.cpus for n in self.nodes))


def real_memory_mib(memory_gb: int) -> int:
    """``RealMemory`` for a VM with ``memory_gb`` of RAM.

    slurmd compares RealMemory with the memory the guest kernel reports, which is below the VM's RAM
    (the kernel and firmware keep some), and drains a node whose RealMemory is larger ("Low
    RealMemory"). The reserve, 1 GiB or a tenth of the RAM if more, also leaves room for the OS, munge,
    slurmd and the NFS client, so jobs cannot push the node into swapping or the OOM killer.
    """
    total = memory_gb * 1024
    reserve = max(1024, total // 10)
    return max(total - reserve, total // 2)


def _refuse(field: str, problem: str, fix: str) -> AiHowError:
    return AiHowError(f"{field}: {problem}", fix=fix)


def slurm_cluster(config: ClusterConfig) -> SlurmCluster:
    """The SLURM cluster ``clusters.hpc`` describes: controller, slurmd nodes, partitions, GRES types."""
    hpc = config.clusters.hpc
    if hpc is None:
        raise _refuse("clusters.hpc", "is missing", "add clusters.hpc with a controller VM")
    vms = [vm for vm in iter_vms(config) if vm.cluster == "hpc"]
    controller = next((vm for vm in vms if vm.role == "slurm-controller"), None)
    if controller is None:
        raise _refuse(
            "clusters.hpc.controller",
            "is missing, so there is no VM to run slurmctld",
            "add clusters.hpc.controller (cpu_cores, memory_gb, disk_gb, ip_address)",
        )
    compute = [vm for vm in vms if vm.role == "slurm-compute"] or [controller]
    nodes = tuple(
        SlurmNode(
            name=vm.name,
            address=str(vm.spec.ip_address),
            cpus=vm.spec.cpu_cores,
            real_memory_mib=real_memory_mib(vm.spec.memory_gb),
            gpus=len(vm.spec.gpus),
        )
        for vm in compute
    )
    gres_types = tuple(hpc.slurm.gres_types)
    for index, gres in enumerate(gres_types):
        if not _GRES_NAME.fullmatch(gres):
            raise _refuse(
                f"clusters.hpc.slurm.gres_types[{index}]",
                f"{gres!r} is not a GRES name",
                "use lower-case names like gpu",
            )
    with_gpus = [n.name for n in nodes if n.gpus]
    if with_gpus and "gpu" not in gres_types:
        raise _refuse(
            "clusters.hpc.slurm.gres_types",
            f"lacks 'gpu' but {', '.join(with_gpus)} pass GPUs through",
            "add gpu to clusters.hpc.slurm.gres_types",
        )
    return SlurmCluster(
        name=hpc.name,
        controller=controller.name,
        controller_address=str(controller.spec.ip_address),
        nodes=nodes,
        partitions=_partitions(config, {n.name for n in nodes}),
        gres_types=gres_types,
    )


def _partitions(config: ClusterConfig, node_names: set[str]) -> tuple[SlurmPartitionSpec, ...]:
    assert config.clusters.hpc is not None
    configured = config.clusters.hpc.slurm.partitions
    if not configured:
        return (SlurmPartitionSpec(DEFAULT_PARTITION, (), True, "INFINITE"),)
    # SLURM has no default partition unless one is marked; ai-how's jobs and users' plain `sbatch`
    # need one, so the first partition is the default when none is marked.
    has_default = any(p.default for p in configured)
    partitions = []
    for index, partition in enumerate(configured):
        field = f"clusters.hpc.slurm.partitions[{index}]"
        unknown = [n for n in partition.nodes if n not in node_names]
        if unknown:
            raise _refuse(
                f"{field}.nodes",
                f"names {', '.join(repr(n) for n in unknown)}, which run no slurmd",
                f"use node names from: {', '.join(sorted(node_names))}",
            )
        if not _MAX_TIME.fullmatch(partition.max_time):
            raise _refuse(
                f"{field}.max_time",
                f"{partition.max_time!r} is not a SLURM time limit",
                "write INFINITE, minutes, HH:MM:SS or D-HH:MM:SS",
            )
        default = partition.default or (not has_default and index == 0)
        partitions.append(
            SlurmPartitionSpec(partition.name, tuple(partition.nodes), default, partition.max_time)
        )
    return tuple(partitions)


def _line(*pairs: tuple[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in pairs)


def render_slurm_conf(cluster: SlurmCluster) -> str:
    """``/etc/slurm/slurm.conf``: identical on every node."""
    lines = [
        MANAGED,
        _line(("ClusterName", cluster.name)),
        _line(("SlurmctldHost", f"{cluster.controller}({cluster.controller_address})")),
        *(_line(setting) for setting in BASE_SETTINGS),
        _line(("DefMemPerCPU", cluster.def_mem_per_cpu_mib)),
    ]
    if cluster.gres_types:
        lines.append(_line(("GresTypes", ",".join(cluster.gres_types))))
    for node in cluster.nodes:
        pairs: list[tuple[str, object]] = [
            ("NodeName", node.name),
            ("NodeAddr", node.address),
            ("CPUs", node.cpus),
            ("RealMemory", node.real_memory_mib),
        ]
        if node.gpus:
            pairs.append(("Gres", f"gpu:{node.gpus}"))
        pairs.append(("State", "UNKNOWN"))
        lines.append(_line(*pairs))
    for partition in cluster.partitions:
        lines.append(
            _line(
                ("PartitionName", partition.name),
                ("Nodes", ",".join(partition.nodes) or "ALL"),
                ("Default", "YES" if partition.default else "NO"),
                ("MaxTime", partition.max_time),
                ("State", "UP"),
            )
        )
    return "\n".join(lines) + "\n"


def render_gres_conf(cluster: SlurmCluster) -> str:
    """``/etc/slurm/gres.conf``: the NVIDIA device files of each node's passed-through GPUs."""
    lines = [MANAGED]
    for node in cluster.nodes:
        if node.gpus:
            files = "/dev/nvidia0" if node.gpus == 1 else f"/dev/nvidia[0-{node.gpus - 1}]"
            lines.append(_line(("NodeName", node.name), ("Name", "gpu"), ("File", files)))
    return "\n".join(lines) + "\n"
