"""cloud-init documents ai-how writes: a VM's NoCloud seed (user-data, meta-data) and the ISO that carries it.

The documents are plain dicts dumped once as YAML (no f-string YAML), so the same builder feeds
the per-VM seed and the Packer template's user-data, and ``cloud-init schema`` can check both.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write
from ai_how.procs import run_logged

# The account ai-how logs in as on every VM (key-only, passwordless sudo).
ADMIN_USER = "aihow"


def user_data(
    *,
    hostname: str,
    ssh_public_keys: Sequence[str],
    fqdn: str | None = None,
    packages: Sequence[str] = (),
    runcmd: Sequence[Sequence[str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cloud-config of one VM: its name, ai-how's account and key, nothing else by default.

    ``locale`` and ``manage_etc_hosts`` are set because without them cloud-init ends in error on a
    minbase Debian and sudo cannot resolve the host (measured, ../shared/notes/cloud-side.md).
    """
    doc: dict[str, Any] = {
        "hostname": hostname,
        "fqdn": fqdn or hostname,
        "manage_etc_hosts": True,
        "locale": "C.UTF-8",
        "ssh_pwauth": False,
        "disable_root": True,
        "users": [
            {
                "name": ADMIN_USER,
                "gecos": "ai-how administration",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": list(ssh_public_keys),
            }
        ],
    }
    if packages:
        doc["packages"] = list(packages)
    if runcmd:
        doc["runcmd"] = [list(cmd) for cmd in runcmd]
    if extra:
        doc.update(extra)
    return doc


def network_config(mac: str) -> dict[str, Any]:
    """Network config v2: the NIC with ``mac`` takes its address by DHCP (the network's static lease)."""
    return {"version": 2, "ethernets": {"primary": {"match": {"macaddress": mac}, "dhcp4": True}}}


def meta_data(*, instance_id: str, hostname: str) -> dict[str, Any]:
    """NoCloud meta-data: a new instance id makes cloud-init run its per-instance modules again."""
    return {"instance-id": instance_id, "local-hostname": hostname}


def dump_cloud_config(doc: Mapping[str, Any]) -> str:
    """A cloud-config document as text (cloud-init requires the ``#cloud-config`` first line)."""
    return "#cloud-config\n" + yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


def write_seed_iso(
    path: Path,
    *,
    user: Mapping[str, Any],
    meta: Mapping[str, Any],
    log_path: Path,
    network: Mapping[str, Any] | None = None,
) -> None:
    """Write a NoCloud seed ISO (volume label ``cidata``) with genisoimage, atomically.

    The same thing ``cloud-localds`` does; genisoimage is called directly so the one subprocess
    helper logs it and the failure names the missing package.
    """
    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    if tool is None:
        raise AiHowError(
            "genisoimage is not installed (needed to write the VMs' cloud-init seed)",
            fix="run `make setup` or `apt-get install genisoimage`",
        )
    with tempfile.TemporaryDirectory(prefix="ai-how-seed-") as tmp:
        folder = Path(tmp)
        (folder / "user-data").write_text(dump_cloud_config(user), encoding="utf-8")
        (folder / "meta-data").write_text(yaml.safe_dump(dict(meta), sort_keys=False), encoding="utf-8")
        files = [folder / "user-data", folder / "meta-data"]
        if network is not None:
            files.append(folder / "network-config")
            files[-1].write_text(yaml.safe_dump(dict(network), sort_keys=False), encoding="utf-8")
        iso = folder / "seed.iso"
        done = run_logged(
            [
                tool,
                "-quiet",
                "-output",
                str(iso),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                *map(str, files),
            ],
            log_path=log_path,
            timeout_s=60,
        )
        if done.returncode != 0:
            raise AiHowError(f"writing the cloud-init seed {path} failed", fix=f"see {log_path}")
        data = iso.read_bytes()
    atomic_write(path, lambda handle: handle.write(data))
