"""The HPC side inside the VMs: slurm.conf/gres.conf from the config, the inventory and playbook Ansible
accepts, the munge key, and ansible-playbook runs over a real SSH server (no VM here: the playbook that
configures SLURM is checked with --syntax-check; its configs are parsed by the real slurmd)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.provision.hpc_config import SlurmPlaybook, ensure_munge_key, run_playbook, write_playbook
from ai_how.provision.hpc_config.slurm_conf import real_memory_mib
from tests.conftest import EXAMPLE
from tests.services import SSHServer

BIN = Path(sys.executable).parent
WriteConfig = Callable[[dict[str, Any]], Path]


def _example() -> ClusterConfig:
    return load_config(EXAMPLE, env={}).config


def _single_vm(example_data: dict[str, Any], write_config: WriteConfig) -> ClusterConfig:
    hpc = example_data["clusters"]["hpc"]
    del hpc["compute_nodes"], hpc["slurm"]["partitions"], hpc["storage"]
    return load_config(write_config(example_data), env={}).config


def _write(config: ClusterConfig, tmp_path: Path) -> SlurmPlaybook:
    return write_playbook(config, tmp_path / "ansible", munge_key=tmp_path / "keys" / "munge.key")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def _inventory(book: SlurmPlaybook) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(book.inventory), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    inventory: dict[str, Any] = json.loads(done.stdout)
    return inventory


def _syntax_check(book: SlurmPlaybook) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(book.inventory), str(book.playbook)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C.UTF-8", "ANSIBLE_NOCOLOR": "1"},
    )


# --------------------------------------------------------------------------- slurm.conf and gres.conf


def test_example_slurm_conf(tmp_path: Path) -> None:
    book = _write(_example(), tmp_path)
    lines = _lines(book.slurm_conf)
    assert "ClusterName=training-cluster" in lines
    assert "SlurmctldHost=hpc-controller(192.168.100.10)" in lines
    assert "SelectType=select/cons_tres" in lines
    assert "GresTypes=gpu" in lines
    assert "ProctrackType=proctrack/linuxproc" in lines and "TaskPlugin=task/none" in lines
    nodes = [line for line in lines if line.startswith("NodeName=")]
    # 32 GB of RAM less a tenth for the guest kernel and the OS; the controller runs no jobs.
    assert nodes == [
        "NodeName=hpc-compute-01 NodeAddr=192.168.100.11 CPUs=8 RealMemory=29492 Gres=gpu:1 State=UNKNOWN"
    ]
    assert [line for line in lines if line.startswith("PartitionName=")] == [
        "PartitionName=gpu Nodes=hpc-compute-01 Default=YES MaxTime=24:00:00 State=UP"
    ]
    assert _lines(book.gres_conf) == ["NodeName=hpc-compute-01 Name=gpu File=/dev/nvidia0"]


def test_single_vm_cluster_runs_jobs_on_its_controller(
    tmp_path: Path, example_data: dict[str, Any], write_config: WriteConfig
) -> None:
    book = _write(_single_vm(example_data, write_config), tmp_path)
    lines = _lines(book.slurm_conf)
    assert "NodeName=hpc-controller NodeAddr=192.168.100.10 CPUs=4 RealMemory=7168 State=UNKNOWN" in lines
    assert "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP" in lines
    assert _lines(book.gres_conf) == []


def test_several_gpus_and_first_partition_default(
    tmp_path: Path, example_data: dict[str, Any], write_config: WriteConfig
) -> None:
    hpc = example_data["clusters"]["hpc"]
    node = hpc["compute_nodes"][0]
    node["pcie_passthrough"]["devices"].append(
        {
            "pci_address": "0000:ca:00.0",
            "device_type": "gpu",
            "vendor_id": "10de",
            "device_id": "1eb8",
            "iommu_group": 4,
        }
    )
    hpc["compute_nodes"].append(
        {
            "name": "hpc-compute-02",
            "cpu_cores": 2,
            "memory_gb": 4,
            "disk_gb": 20,
            "ip_address": "192.168.100.12",
        }
    )
    hpc["slurm"]["partitions"] = [
        {"name": "gpu", "nodes": ["hpc-compute-01"], "max_time": "1-12:00:00"},
        {"name": "cpu", "nodes": ["hpc-compute-02"]},
    ]
    book = _write(load_config(write_config(example_data), env={}).config, tmp_path)
    lines = _lines(book.slurm_conf)
    assert (
        "NodeName=hpc-compute-01 NodeAddr=192.168.100.11 CPUs=8 RealMemory=29492 Gres=gpu:2 State=UNKNOWN"
        in lines
    )
    assert "NodeName=hpc-compute-02 NodeAddr=192.168.100.12 CPUs=2 RealMemory=3072 State=UNKNOWN" in lines
    # No partition marked default: the first one is (SLURM would have none, and plain sbatch would fail).
    assert "PartitionName=gpu Nodes=hpc-compute-01 Default=YES MaxTime=1-12:00:00 State=UP" in lines
    assert "PartitionName=cpu Nodes=hpc-compute-02 Default=NO MaxTime=INFINITE State=UP" in lines
    # A job without --mem gets its CPUs' share of the smallest node's memory.
    assert "DefMemPerCPU=1536" in lines
    assert _lines(book.gres_conf) == ["NodeName=hpc-compute-01 Name=gpu File=/dev/nvidia[0-1]"]


def test_real_memory_leaves_room_for_the_guest() -> None:
    assert real_memory_mib(2) == 1024
    assert real_memory_mib(8) == 7168
    assert real_memory_mib(64) == 65536 - 6553
    assert real_memory_mib(1) == 512


def _slurmd_parse(book: SlurmPlaybook, node: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """slurmd -G reads slurm.conf and gres.conf, prints the node's GRES and exits (no daemon, no state).

    There is no NVIDIA GPU here, so gres.conf points at /dev/null instead (platform.md §7.5's fake GPU);
    -L keeps its log out of this machine's /var/log/slurm.
    """
    folder = tmp_path / "slurmd-check"
    folder.mkdir(exist_ok=True)
    shutil.copy(book.slurm_conf, folder / "slurm.conf")
    (folder / "gres.conf").write_text(book.gres_conf.read_text().replace("/dev/nvidia0", "/dev/null"))
    return subprocess.run(
        ["slurmd", "-G", "-f", str(folder / "slurm.conf"), "-L", str(folder / "slurmd.log"), "-N", node],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("slurmd") is None, reason="needs slurmd (apt-get install slurm-wlm)")
def test_real_slurmd_accepts_the_generated_configs(
    tmp_path: Path, example_data: dict[str, Any], write_config: WriteConfig
) -> None:
    book = _write(_example(), tmp_path)
    done = _slurmd_parse(book, "hpc-compute-01", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Gres Name=gpu" in done.stderr and "Count=1" in done.stderr and "File=/dev/null" in done.stderr

    single = _write(_single_vm(example_data, write_config), tmp_path / "single")
    done = _slurmd_parse(single, "hpc-controller", tmp_path / "single")
    assert done.returncode == 0, done.stderr

    # The check is real: a key slurmd does not know stops it.
    book.slurm_conf.write_text(book.slurm_conf.read_text() + "NoSuchKey=1\n")
    done = _slurmd_parse(book, "hpc-compute-01", tmp_path)
    assert done.returncode != 0 and "NoSuchKey" in done.stderr


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda hpc: hpc["slurm"]["partitions"][0].update(nodes=["hpc-controller"]), "partitions[0].nodes"),
        (lambda hpc: hpc["slurm"]["partitions"][0].update(max_time="a day"), "partitions[0].max_time"),
        (lambda hpc: hpc["slurm"].update(gres_types=[]), "clusters.hpc.slurm.gres_types"),
        (lambda hpc: hpc.pop("controller"), "clusters.hpc.controller"),
        (lambda hpc: hpc["storage"].update(mount_point="/etc"), "clusters.hpc.storage.mount_point"),
        (lambda hpc: hpc["storage"].update(mount_point="/mnt/a b"), "clusters.hpc.storage.mount_point"),
    ],
)
def test_configs_slurm_would_refuse_name_the_field(
    tmp_path: Path,
    example_data: dict[str, Any],
    write_config: WriteConfig,
    change: Callable[[dict[str, Any]], object],
    field: str,
) -> None:
    change(example_data["clusters"]["hpc"])
    config = load_config(write_config(example_data), env={}).config
    with pytest.raises(AiHowError) as caught:
        _write(config, tmp_path)
    assert field in caught.value.message and caught.value.fix
    assert not (tmp_path / "ansible" / "hosts.yaml").exists()


# --------------------------------------------------------------------------- inventory, variables, playbook


def test_example_inventory(tmp_path: Path) -> None:
    book = _write(_example(), tmp_path)
    inventory = _inventory(book)
    assert inventory["slurm_controller"]["hosts"] == ["hpc-controller"]
    assert inventory["slurm_compute"]["hosts"] == ["hpc-compute-01"]
    assert inventory["slurm_nodes"]["hosts"] == ["hpc-compute-01"]
    assert set(inventory["hpc"]["children"]) == {"slurm_controller", "slurm_compute", "slurm_nodes"}
    hostvars = inventory["_meta"]["hostvars"]
    assert set(hostvars) == {"hpc-controller", "hpc-compute-01"}  # the cloud side is not here
    assert hostvars["hpc-controller"]["ansible_host"] == "192.168.100.10"
    assert hostvars["hpc-compute-01"]["ansible_host"] == "192.168.100.11"
    assert hostvars["hpc-compute-01"]["slurm_gpus"] == 1
    assert {v["ansible_user"] for v in hostvars.values()} == {"aihow"}


def test_single_vm_inventory(tmp_path: Path, example_data: dict[str, Any], write_config: WriteConfig) -> None:
    inventory = _inventory(_write(_single_vm(example_data, write_config), tmp_path))
    assert inventory["slurm_controller"]["hosts"] == ["hpc-controller"]
    assert inventory["slurm_nodes"]["hosts"] == ["hpc-controller"]
    assert not inventory.get("slurm_compute", {}).get("hosts")
    assert inventory["_meta"]["hostvars"]["hpc-controller"]["ansible_host"] == "192.168.100.10"


def test_playbook_passes_syntax_check(
    tmp_path: Path, example_data: dict[str, Any], write_config: WriteConfig
) -> None:
    """--syntax-check resolves every module name: one outside ansible.builtin (not installed) fails it."""
    for name, config in (("example", _example()), ("single", _single_vm(example_data, write_config))):
        done = _syntax_check(_write(config, tmp_path / name))
        assert done.returncode == 0, done.stdout + done.stderr


def test_beegfs_is_served_as_nfs_from_the_controller(tmp_path: Path) -> None:
    book = _write(_example(), tmp_path)
    shared = yaml.safe_load(book.vars_file.read_text())["shared_storage"]
    assert shared["exports_line"] == "/mnt/beegfs 192.168.100.0/24(rw,sync,no_subtree_check)"
    assert shared["fstab_line"] == "192.168.100.10:/mnt/beegfs /mnt/beegfs nfs defaults,_netdev 0 0"
    assert book.notes == (
        "BeeGFS is not packaged in Debian: /mnt/beegfs is shared over NFS from hpc-controller instead",
    )


@pytest.mark.parametrize(("storage", "shared"), [("local", False), ("nfs", True)])
def test_storage_types(
    tmp_path: Path, example_data: dict[str, Any], write_config: WriteConfig, storage: str, shared: bool
) -> None:
    example_data["clusters"]["hpc"]["storage"]["type"] = storage
    book = _write(load_config(write_config(example_data), env={}).config, tmp_path)
    variables = yaml.safe_load(book.vars_file.read_text())
    assert bool(variables["shared_storage"]) is shared
    assert book.notes == ()


# --------------------------------------------------------------------------- munge key


def test_munge_key_is_made_once_private_and_never_copied_into_the_files(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "munge.key"
    assert ensure_munge_key(key) == key
    data = key.read_bytes()
    assert len(data) == 1024
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ensure_munge_key(key).read_bytes() == data  # reused, not replaced
    assert [p.name for p in key.parent.iterdir()] == ["munge.key"]  # no temp file left

    book = write_playbook(_example(), tmp_path / "ansible", munge_key=key)
    assert key.read_bytes() == data and book.munge_key == key
    for path in book.out_dir.rglob("*"):
        if path.is_file():
            assert data[:64] not in path.read_bytes(), path
    assert yaml.safe_load(book.vars_file.read_text())["munge_key_file"] == str(key)


def test_too_short_munge_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "munge.key"
    key.write_bytes(b"short")
    with pytest.raises(AiHowError, match="5 bytes"):
        ensure_munge_key(key)


# --------------------------------------------------------------------------- ansible-playbook over real SSH


def _ssh_playbook(
    tmp_path: Path, server: SSHServer, *, host: str, tasks: list[dict[str, Any]]
) -> SlurmPlaybook:
    """A two-task playbook against the test SSH server, in the shape write_playbook produces."""
    port = int(server.login.rsplit(":", 1)[1])
    out = tmp_path / "ansible"
    out.mkdir()
    inventory = out / "hosts.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "node-a": {
                            "ansible_host": host,
                            "ansible_port": port,
                            "ansible_user": "root",
                            "ansible_python_interpreter": "/usr/bin/python3",
                        }
                    }
                }
            }
        )
    )
    playbook = out / "play.yml"
    playbook.write_text(
        yaml.safe_dump([{"name": "Test", "hosts": "all", "gather_facts": False, "tasks": tasks}])
    )
    return SlurmPlaybook(
        out, inventory, playbook, out / "vars.yml", out / "slurm.conf", out / "gres.conf", out / "key"
    )


def _client_key(server: SSHServer) -> Path:
    return Path(server.options[server.options.index("-i") + 1])


def test_run_playbook_records_the_host_key_and_names_the_failed_task(
    tmp_path: Path, ssh_server: SSHServer
) -> None:
    tasks = [
        {"name": "Say hello", "ansible.builtin.command": "echo hello-from-node"},
        {"name": "A failure that is ignored", "ansible.builtin.command": "false", "ignore_errors": True},
        {"name": "Break on purpose", "ansible.builtin.command": "sh -c 'echo broken-here >&2; exit 3'"},
    ]
    book = _ssh_playbook(tmp_path, ssh_server, host="127.0.0.1", tasks=tasks)
    known_hosts = tmp_path / "ssh" / "known_hosts"
    log = tmp_path / "logs" / "ansible.log"
    seen: list[str] = []
    with pytest.raises(AiHowError) as caught:
        run_playbook(
            book, ssh_key=_client_key(ssh_server), known_hosts=known_hosts, log_path=log, on_line=seen.append
        )
    message = str(caught.value)
    assert "'Break on purpose'" in message and "node-a" in message and "broken-here" in message
    assert str(log) in message
    assert any(line.startswith("TASK [Say hello]") for line in seen)
    assert "hello-from-node" not in message and "PLAY RECAP" in log.read_text()
    # The first connection recorded the server's key in ai-how's known_hosts (accept-new).
    host_key = (_client_key(ssh_server).parent / "host_key.pub").read_text().split()[1]
    assert host_key in known_hosts.read_text()


def test_run_playbook_refuses_a_changed_host_key(tmp_path: Path, ssh_server: SSHServer) -> None:
    port = ssh_server.login.rsplit(":", 1)[1]
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    # "localhost", not 127.0.0.1: a different host name, so no SSH master connection from another test is reused.
    known_hosts.write_text(f"[localhost]:{port} {other.with_suffix('.pub').read_text()}")
    book = _ssh_playbook(
        tmp_path,
        ssh_server,
        host="localhost",
        tasks=[{"name": "Never runs", "ansible.builtin.command": "true"}],
    )
    with pytest.raises(AiHowError) as caught:
        run_playbook(
            book, ssh_key=_client_key(ssh_server), known_hosts=known_hosts, log_path=tmp_path / "a.log"
        )
    assert "host key of node-a differs" in caught.value.message and "ssh-keygen" in (caught.value.fix or "")
    assert "HOST IDENTIFICATION HAS CHANGED" in (tmp_path / "a.log").read_text()
