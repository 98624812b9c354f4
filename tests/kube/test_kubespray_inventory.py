"""Kubespray's inventory and group_vars for the example config: what ansible-inventory reads, and every
key known to Kubespray v2.31.0's sample inventory (../shared/schemas/kubespray-v2.31.0/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.loader import load_config
from ai_how.errors import AiHowError
from ai_how.kube.kubespray.inventory import write_inventory
from tests.conftest import EXAMPLE, REPO

SAMPLE = REPO.parent / "shared" / "schemas" / "kubespray-v2.31.0"
# Keys Kubespray reads that its sample group_vars do not list (documented in its docs/ and role defaults):
DOCUMENTED = {
    "calico_version",  # roles/kubespray_defaults: the Calico release (docs/CNI/calico.md)
    "containerd_version",  # roles/kubespray_defaults (docs/CRI/containerd.md)
    "access_ip",  # docs/ansible/vars.md: the address other nodes use
    "ip",  # docs/ansible/vars.md
    "node_labels",  # docs/ansible/vars.md
    "node_taints",  # docs/ansible/vars.md
    "kube_version",  # roles/kubespray_defaults (docs/getting_started: the Kubernetes release to install)
    "artifacts_dir",  # roles/kubespray_defaults: where kubeconfig_localhost writes admin.conf
}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    write_inventory(load_config(EXAMPLE).config, tmp_path / "kubespray", artifacts_dir=tmp_path / "artifacts")
    return tmp_path / "kubespray"


def _ansible_inventory(inventory: Path) -> dict[str, Any]:
    tool = Path(sys.executable).parent / "ansible-inventory"
    done = subprocess.run(
        [str(tool), "-i", str(inventory / "hosts.yaml"), "--list"], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_ansible_reads_groups_hosts_and_vars(inventory: Path, tmp_path: Path) -> None:
    data = _ansible_inventory(inventory)
    assert data["kube_control_plane"]["hosts"] == ["control-plane"]
    assert data["etcd"]["hosts"] == ["control-plane"]
    assert data["kube_node"]["hosts"] == ["cpu-worker", "gpu-worker-1", "gpu-worker-2"]
    assert set(data["k8s_cluster"]["children"]) >= {"kube_control_plane", "kube_node"}
    gpu = data["_meta"]["hostvars"]["gpu-worker-1"]
    assert (gpu["ansible_host"], gpu["ip"], gpu["ansible_user"]) == (
        "192.168.200.12",
        "192.168.200.12",
        "aihow",
    )
    assert gpu["node_taints"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert gpu["node_labels"]["gpu-type"] == "rtx-a6000"
    assert gpu["kube_version"] == "1.35.4" and gpu["containerd_version"] == "2.2.3"
    assert gpu["calico_version"] == "3.31.5" and gpu["kube_network_plugin"] == "calico"
    assert gpu["kube_pods_subnet"] == "10.244.0.0/16" and gpu["kube_service_addresses"] == "10.96.0.0/12"
    assert gpu["kubeconfig_localhost"] is True and gpu["artifacts_dir"] == str(tmp_path / "artifacts")
    assert "ingress_nginx_enabled" not in gpu  # removed in v2.31.0, ignored silently: ai-how installs it


def _sample_keys() -> set[str]:
    keys: set[str] = set()
    for path in (SAMPLE / "group_vars").rglob("*.yml"):
        for line in path.read_text().splitlines():
            stripped = line.lstrip("# ").split(":")[0].strip()
            if (
                stripped
                and line.lstrip().lstrip("#").lstrip() == line.lstrip().lstrip("#").lstrip()
                and ":" in line
            ):
                keys.add(stripped)
    return keys


def test_every_key_is_one_kubespray_knows(inventory: Path) -> None:
    if not SAMPLE.is_dir():
        pytest.skip(f"{SAMPLE} is absent (the shared reference schemas are not checked out here)")
    known = _sample_keys() | DOCUMENTED | {"ansible_host", "ansible_user"}
    written: set[str] = set()
    for path in (inventory / "group_vars").rglob("*.yml"):
        written |= set(yaml.safe_load(path.read_text()))
    hosts = yaml.safe_load((inventory / "hosts.yaml").read_text())["all"]["hosts"]
    for host in hosts.values():
        written |= set(host)
    assert written - known == set()


def test_versions_are_ones_v2_31_installs(inventory: Path) -> None:
    if not SAMPLE.is_dir():
        pytest.skip(f"{SAMPLE} is absent")
    supported = yaml.safe_load((SAMPLE / "supported-versions.yml").read_text())["supported_versions"]
    cluster = yaml.safe_load((inventory / "group_vars" / "k8s_cluster" / "k8s-cluster.yml").read_text())
    assert cluster["kube_version"] in supported["kubelet"]
    containerd = yaml.safe_load((inventory / "group_vars" / "all" / "all.yml").read_text())[
        "containerd_version"
    ]
    assert containerd in supported["containerd_archive"]
    calico = yaml.safe_load((inventory / "group_vars" / "k8s_cluster" / "k8s-net-calico.yml").read_text())
    assert calico["calico_version"] in supported["calicoctl_binary"]


def test_another_release_pinned_by_commit_takes_exact_versions_unchecked(
    example_data: dict[str, Any], write_config: Any, tmp_path: Path
) -> None:
    """A v2.30 user pins the tag's commit; ai-how has no version data for it, so exact versions pass."""
    k8s = example_data["clusters"]["cloud"]["kubernetes_config"]
    k8s["kubespray"] = {"version": "v2.30.0", "commit": "a" * 40}
    k8s["version"] = "1.34.3"
    k8s["runtime_version"] = "2.1.5"
    path = write_config(example_data)
    from ai_how.config.checking import check_file

    assert check_file(path).valid
    inventory = write_inventory(load_config(path).config, tmp_path / "k", artifacts_dir=tmp_path / "a")
    assert any("not checked" in note for note in inventory.notes)
    cluster = yaml.safe_load((tmp_path / "k" / "group_vars" / "k8s_cluster" / "k8s-cluster.yml").read_text())
    assert cluster["kube_version"] == "1.34.3"
    k8s["version"] = "1.34"  # not exact: nothing to resolve it against
    with pytest.raises(AiHowError, match="exact Kubernetes version"):
        write_inventory(
            load_config(write_config(example_data)).config, tmp_path / "k2", artifacts_dir=tmp_path / "a"
        )
