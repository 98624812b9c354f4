"""The files ``ansible-playbook`` needs to configure the HPC VMs: inventory, variables, SLURM configs, playbook.

Everything is generated from the cluster config into one folder; the playbook itself is static package
data (``ai_how/data/ansible/slurm-cluster.yml``) copied beside them. The munge key is referenced by its
path only: its bytes never enter the inventory or the variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ai_how.config.models import ClusterConfig
from ai_how.config.topology import iter_vms
from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.provision.cloudinit import ADMIN_USER
from ai_how.provision.hpc_config.munge import ensure_munge_key
from ai_how.provision.hpc_config.slurm_conf import (
    SlurmCluster,
    render_gres_conf,
    render_slurm_conf,
    slurm_cluster,
)

PLAYBOOK_NAME = "slurm-cluster.yml"
# The path goes into /etc/exports and /etc/fstab, whose fields are separated by blanks.
_MOUNT_POINT = re.compile(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]")
_SYSTEM_DIRS = {
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
}


@dataclass(frozen=True)
class SlurmPlaybook:
    """What :func:`write_playbook` wrote (all under ``out_dir``)."""

    out_dir: Path
    inventory: Path
    playbook: Path
    vars_file: Path
    slurm_conf: Path
    gres_conf: Path
    munge_key: Path
    notes: tuple[str, ...] = field(default=())  # for the user, e.g. BeeGFS served as NFS


def _dump(path: Path, doc: dict[str, Any], header: str) -> None:
    atomic_write_text(path, f"# {header}\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def inventory(config: ClusterConfig, cluster: SlurmCluster) -> dict[str, Any]:
    """The Ansible inventory: groups slurm_controller, slurm_compute and slurm_nodes (runs slurmd) under hpc."""
    vms = [vm for vm in iter_vms(config) if vm.cluster == "hpc"]
    gpus = {node.name: node.gpus for node in cluster.nodes}

    def host(name: str, address: str) -> dict[str, Any]:
        return {"ansible_host": address, "slurm_gpus": gpus.get(name, 0)}

    controller = {
        vm.name: host(vm.name, str(vm.spec.ip_address)) for vm in vms if vm.role == "slurm-controller"
    }
    compute = {vm.name: host(vm.name, str(vm.spec.ip_address)) for vm in vms if vm.role == "slurm-compute"}
    return {
        "all": {
            "children": {
                "hpc": {
                    "vars": {"ansible_user": ADMIN_USER, "ansible_python_interpreter": "/usr/bin/python3"},
                    "children": {
                        "slurm_controller": {"hosts": controller},
                        "slurm_compute": {"hosts": compute},
                        "slurm_nodes": {"hosts": {node.name: None for node in cluster.nodes}},
                    },
                }
            }
        }
    }


def shared_storage(config: ClusterConfig, cluster: SlurmCluster) -> dict[str, str]:
    """How the playbook shares ``clusters.hpc.storage``: an NFS export from the controller ({} for none)."""
    hpc = config.clusters.hpc
    assert hpc is not None
    storage = hpc.storage
    if storage is None or storage.type == "local":
        return {}
    mount = storage.mount_point.rstrip("/") or "/"
    if not _MOUNT_POINT.fullmatch(mount) or mount in _SYSTEM_DIRS or "/../" in f"{mount}/":
        raise AiHowError(
            f"clusters.hpc.storage.mount_point: {storage.mount_point!r} cannot be shared",
            fix="use an absolute path of letters, digits, '.', '_', '-' outside system folders, like /mnt/shared",
        )
    assert hpc.network is not None  # the model requires one when VMs are defined
    server = cluster.controller_address
    shared = {
        "mount_point": mount,
        "server": server,
        "exports_line": f"{mount} {hpc.network.subnet}(rw,sync,no_subtree_check)",
        "fstab_line": f"{server}:{mount} {mount} nfs defaults,_netdev 0 0",
        "fstab_regexp": rf"^\S+\s+{re.escape(mount)}\s",
    }
    if storage.type == "beegfs":
        shared["note"] = (
            f"BeeGFS is not packaged in Debian: {mount} is shared over NFS from {cluster.controller} instead"
        )
    return shared


def write_playbook(config: ClusterConfig, out_dir: Path, *, munge_key: Path) -> SlurmPlaybook:
    """Write the inventory, variables, slurm.conf, gres.conf and playbook for ``clusters.hpc`` to ``out_dir``.

    ``munge_key`` is created (see :func:`ensure_munge_key`) if it does not exist yet.
    """
    cluster = slurm_cluster(config)
    shared = shared_storage(config, cluster)  # checked before anything is written
    out_dir = out_dir.resolve()
    files = out_dir / "files"
    slurm_conf, gres_conf = files / "slurm.conf", files / "gres.conf"
    key = ensure_munge_key(munge_key).resolve()
    vms = [vm for vm in iter_vms(config) if vm.cluster == "hpc"]
    variables: dict[str, Any] = {
        "slurm_cluster_name": cluster.name,
        "slurm_conf_file": str(slurm_conf),
        "gres_conf_file": str(gres_conf),
        "munge_key_file": str(key),  # the path only; the playbook copies the bytes with no_log
        "slurm_hosts_lines": [f"{vm.spec.ip_address} {vm.name}" for vm in vms],
        "shared_storage": shared,
    }
    atomic_write_text(slurm_conf, render_slurm_conf(cluster))
    atomic_write_text(gres_conf, render_gres_conf(cluster))
    hosts = out_dir / "hosts.yaml"
    _dump(hosts, inventory(config, cluster), f"ai-how: the VMs of HPC cluster {cluster.name}")
    vars_file = out_dir / "vars.yml"
    _dump(vars_file, variables, f"ai-how: variables of {PLAYBOOK_NAME} for HPC cluster {cluster.name}")
    playbook = out_dir / PLAYBOOK_NAME
    text = resources.files("ai_how").joinpath("data", "ansible", PLAYBOOK_NAME).read_text(encoding="utf-8")
    atomic_write_text(playbook, text)
    return SlurmPlaybook(
        out_dir=out_dir,
        inventory=hosts,
        playbook=playbook,
        vars_file=vars_file,
        slurm_conf=slurm_conf,
        gres_conf=gres_conf,
        munge_key=key,
        notes=(shared["note"],) if "note" in shared else (),
    )
