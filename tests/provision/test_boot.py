"""A real VM: the hpc-base image booted under QEMU (TCG) by ``ai-how hpc start`` on qemu:///system.

Slow (minutes: an emulated guest boots in ~2 minutes here), so it runs in ``make test-slow``. It goes
through the installed ``ai-how`` command as a user would, then reaches the guest with ai-how's key,
configures SLURM with the generated playbook, runs a job, and checks nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.services import AI_HOW

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # image build + a TCG boot

SUBNET = "10.123.0"
VM = "boot-ctl"


def _ai_how(*args: str, env: dict[str, str], timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AI_HOW, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _virsh(uri: str, *args: str) -> str:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, check=True).stdout


def test_boot_ssh_slurm_stop_destroy(
    hpc_base_image: Any,
    libvirtd: str,
    tmp_path: Path,
    write_config: Callable[[dict[str, Any]], Path],
) -> None:
    config = write_config(
        {
            "version": "1.0",
            "metadata": {"name": "boot-test"},
            "clusters": {
                "hpc": {
                    "name": "boot-test",
                    "base_image_path": str(hpc_base_image.path),
                    "scheduler": "slurm",
                    "network": {"subnet": f"{SUBNET}.0/24", "bridge": "aihowboot0"},
                    "controller": {
                        "name": VM,
                        "cpu_cores": 2,
                        "memory_gb": 2,
                        "disk_gb": 8,
                        "ip_address": f"{SUBNET}.10",
                    },
                    "slurm": {"partitions": [{"name": "debug", "default": True}]},
                }
            },
        }
    )
    state = tmp_path / "state"
    env = {**os.environ, "AI_HOW_STATE_DIR": str(state)}
    uri = libvirtd
    try:
        started = _ai_how(
            "hpc",
            "start",
            str(config),
            "--uri",
            uri,
            "--virt-type",
            "qemu",
            "--timeout",
            "1200",
            "--json",
            env=env,
        )
        assert started.returncode == 0, started.stderr[-4000:]
        vms = json.loads(started.stdout)["vms"]
        assert [(v["name"], v["state"]) for v in vms] == [(VM, "running")]

        key = state / "clusters" / "hpc" / "ssh" / "id_ed25519"
        known = state / "clusters" / "hpc" / "ssh" / "known_hosts"
        ssh = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", f"aihow@{SUBNET}.10"]  # fmt: skip

        def guest(*cmd: str) -> str:
            # one argument: ssh joins its arguments into a remote shell line, so quote them
            remote = shlex.join(cmd)
            done = subprocess.run([*ssh, remote], capture_output=True, text=True, timeout=300, check=False)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"
            return done.stdout.strip()

        assert guest("hostname") == VM
        assert "done" in guest("cloud-init", "status")
        # the playbook made it a one-node SLURM cluster: a job runs and prints the node's name
        assert guest("srun", "--time=1", "hostname") == VM
        assert guest("sinfo", "-h", "-o", "%P %T").split()[1] in ("idle", "mixed", "allocated")

        stopped = _ai_how("hpc", "stop", str(config), "--timeout", "90", env=env)
        assert stopped.returncode == 0, stopped.stderr
        status = _ai_how("hpc", "status", str(config), "--json", env=env)
        assert json.loads(status.stdout)["vms"][0]["state"] == "shut off"
    finally:
        destroyed = _ai_how("hpc", "destroy", str(config), "--yes", env=env)
    assert destroyed.returncode == 0, destroyed.stderr
    assert VM not in _virsh(uri, "list", "--all", "--name").split()
    assert "aihow-boot-test" not in _virsh(uri, "net-list", "--all", "--name").split()
    assert "aihow-boot-test" not in _virsh(uri, "pool-list", "--all", "--name").split()
    assert not Path("/var/lib/libvirt/images/aihow-boot-test").exists()
    assert (state / "clusters" / "hpc" / "logs" / f"{VM}-console.log").is_file()  # kept for post-mortems
    assert hpc_base_image.path.is_file()  # the base image is never touched
