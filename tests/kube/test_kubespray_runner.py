"""The Kubespray runner: obtaining Kubespray (git clone of the pinned tag, commit verified, cached), its own
venv, the SSH pre-flight, running ``cluster.yml`` and fetching the admin kubeconfig.

Kubespray itself cannot be fetched on this machine (no network) and needs real VMs, so ``cluster.yml`` here
is a stand-in: a tiny playbook that records the inventory and variables it received and writes a fake
``admin.conf`` into ``artifacts_dir``, as ``kubeconfig_localhost: true`` makes Kubespray do. It runs under
the real ``ansible-playbook`` against localhost (``ansible_connection: local`` in the test inventory), so
the command line, the inventory/group_vars layout, the extra variables, the progress stream and the
failure message are the ones a real run gets. ``obtain`` clones a real git repository made here (served
by file:// URL) with the real git; the SSH check talks to a real sshd.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.errors import AiHowError
from ai_how.kube.kubespray.runner import check_ssh, fetch_kubeconfig, run_cluster_yml
from ai_how.kube.kubespray.source import ensure_venv, head_commit, obtain
from ai_how.procs import free_port
from tests.services import SSHServer

BIN = Path(sys.executable).parent

STAND_IN_CLUSTER_YML = [
    {
        "name": "Stand-in for Kubespray's cluster.yml",
        "hosts": "k8s_cluster",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Record the inventory and variables received",
                "tags": ["record"],
                "ansible.builtin.copy": {
                    "dest": "{{ artifacts_dir }}/received-{{ inventory_hostname }}.json",
                    "content": "{{ {'groups': groups, 'kube_version': kube_version, "
                    "'kube_network_plugin': kube_network_plugin, 'node_labels': node_labels | default({}), "
                    "'ip': ip, 'marker': stand_in_marker | default(None)} "
                    "| to_nice_json }}",
                },
            },
            {
                "name": "Install the kubelet",
                "tags": ["kubelet"],
                "ansible.builtin.command": "sh -c 'echo kubelet-broke-here >&2; exit 1'",
                "when": "inventory_hostname == (stand_in_fail_on | default(''))",
            },
        ],
    },
    {
        "name": "Write the admin kubeconfig to artifacts_dir",
        "hosts": "kube_control_plane[0]",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Copy admin.conf to the Ansible host",
                "tags": ["kubeconfig"],
                "when": "kubeconfig_localhost | bool",
                "ansible.builtin.copy": {
                    "dest": "{{ artifacts_dir }}/admin.conf",
                    "mode": "0640",
                    "content": "{{ kubeconfig | to_nice_yaml }}",
                },
                "vars": {
                    "kubeconfig": {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "clusters": [
                            {
                                "name": "{{ cluster_name }}",
                                "cluster": {
                                    "certificate-authority-data": "ZmFrZQ==",
                                    "server": "https://{{ ip }}:6443",
                                },
                            }
                        ],
                        "users": [{"name": "kubernetes-admin", "user": {"client-key-data": "c2VjcmV0"}}],
                        "contexts": [
                            {
                                "name": "kubernetes-admin@{{ cluster_name }}",
                                "context": {"cluster": "{{ cluster_name }}", "user": "kubernetes-admin"},
                            }
                        ],
                        "current-context": "kubernetes-admin@{{ cluster_name }}",
                    }
                },
            }
        ],
    },
]


def _stand_in_kubespray(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "cluster.yml").write_text(yaml.safe_dump(STAND_IN_CLUSTER_YML, sort_keys=False))
    (root / "requirements.txt").write_text("")
    return root


def _inventory(root: Path) -> Path:
    """A Kubespray-shaped inventory (hosts.yaml + group_vars/) whose hosts are this machine."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {
        "node1": {**local, "ansible_host": "10.10.0.11", "ip": "10.10.0.11", "node_labels": {"role": "cp"}},
        "node2": {
            **local,
            "ansible_host": "10.10.0.12",
            "ip": "10.10.0.12",
            "node_labels": {"nvidia.com/gpu.present": "true"},
        },
    }
    inventory = {
        "all": {
            "hosts": hosts,
            "children": {
                "kube_control_plane": {"hosts": {"node1": None}},
                "etcd": {"hosts": {"node1": None}},
                "kube_node": {"hosts": {"node1": None, "node2": None}},
                "k8s_cluster": {"children": {"kube_control_plane": None, "kube_node": None}},
            },
        }
    }
    root.mkdir(parents=True)
    (root / "hosts.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    group_vars = root / "group_vars"
    (group_vars / "k8s_cluster").mkdir(parents=True)
    (group_vars / "all").mkdir(parents=True)
    (group_vars / "k8s_cluster" / "k8s-cluster.yml").write_text(
        yaml.safe_dump(
            {"kube_version": "1.35.4", "kube_network_plugin": "calico", "cluster_name": "ai-how.local"}
        )
    )
    (group_vars / "all" / "all.yml").write_text(yaml.safe_dump({"kubeconfig_localhost": True}))
    return root


@dataclass
class Deploy:
    kubespray: Path
    inventory: Path
    artifacts: Path
    log: Path
    known_hosts: Path
    events: list[str]

    def run(self, **kwargs: Any) -> None:
        run_cluster_yml(
            self.kubespray,
            self.inventory,
            ansible_bin_dir=BIN,
            ssh_key=self.inventory / "unused_key",
            known_hosts=self.known_hosts,
            artifacts_dir=self.artifacts,
            log_path=self.log,
            on_event=self.events.append,
            **kwargs,
        )


@pytest.fixture
def deploy(tmp_path: Path) -> Deploy:
    return Deploy(
        kubespray=_stand_in_kubespray(tmp_path / "kubespray"),
        inventory=_inventory(tmp_path / "state" / "cloud" / "kubespray"),
        artifacts=tmp_path / "state" / "cloud" / "artifacts",
        log=tmp_path / "logs" / "kubespray.log",
        known_hosts=tmp_path / "ssh" / "known_hosts",
        events=[],
    )


# --------------------------------------------------------------------------- cluster.yml


def test_cluster_yml_gets_the_inventory_and_vars_and_streams_progress(deploy: Deploy) -> None:
    deploy.run(extra_vars={"stand_in_marker": "from-extra-vars"})

    received = {
        node: json.loads((deploy.artifacts / f"received-{node}.json").read_text())
        for node in ("node1", "node2")
    }
    node2 = received["node2"]
    assert node2["kube_version"] == "1.35.4" and node2["kube_network_plugin"] == "calico"
    assert node2["node_labels"] == {"nvidia.com/gpu.present": "true"} and node2["ip"] == "10.10.0.12"
    assert node2["groups"]["kube_control_plane"] == ["node1"]
    assert sorted(node2["groups"]["kube_node"]) == ["node1", "node2"]
    assert node2["marker"] == "from-extra-vars"  # extra vars, through -e @file
    assert " -b --private-key " in deploy.log.read_text()  # Kubespray's tasks need root on the nodes
    # Progress: the plays and tasks by name with the elapsed time, each host's recap, not every output line.
    assert any(e.endswith("PLAY Stand-in for Kubespray's cluster.yml") and " s " in e for e in deploy.events)
    assert any(e.endswith("TASK Record the inventory and variables received") for e in deploy.events)
    assert any("node2 : ok=1 changed=1" in e for e in deploy.events)
    assert not any("changed: [node" in e or e.startswith("ok:") for e in deploy.events)
    assert "PLAY RECAP" in deploy.log.read_text()  # the full output is kept


def test_kubeconfig_is_fetched_private_with_the_server_rewritten(deploy: Deploy, tmp_path: Path) -> None:
    deploy.run()
    dest = tmp_path / "home" / "kubeconfig"

    fetch_kubeconfig(deploy.artifacts, dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    config = yaml.safe_load(dest.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://10.10.0.11:6443"  # Kubespray's own choice
    assert config["users"][0]["user"]["client-key-data"] == "c2VjcmV0"

    fetch_kubeconfig(deploy.artifacts, dest, server="192.168.200.10")  # replaces the file, still 0600
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert (
        yaml.safe_load(dest.read_text())["clusters"][0]["cluster"]["server"] == "https://192.168.200.10:6443"
    )
    assert [p.name for p in dest.parent.iterdir()] == ["kubeconfig"]  # no temp file left behind


def test_missing_admin_conf_says_kubeconfig_localhost(tmp_path: Path) -> None:
    with pytest.raises(AiHowError) as caught:
        fetch_kubeconfig(tmp_path, tmp_path / "kubeconfig")
    assert "admin.conf" in caught.value.message and "kubeconfig_localhost" in (caught.value.fix or "")


def test_failed_task_ends_in_one_line_naming_task_host_and_log(deploy: Deploy) -> None:
    with pytest.raises(AiHowError) as caught:
        deploy.run(extra_vars={"stand_in_fail_on": "node2"})
    error = caught.value
    assert "'Install the kubelet'" in error.message and "on node2" in error.message
    assert "kubelet-broke-here" in error.message and "\n" not in str(error)
    assert str(deploy.log) in (error.fix or "")


def test_tags_and_limit_are_passed_through(deploy: Deploy) -> None:
    deploy.run(tags=["record"], limit="node2")
    assert [p.name for p in deploy.artifacts.iterdir()] == [
        "received-node2.json"
    ]  # no admin.conf: not tagged
    assert "--tags record --limit node2" in deploy.log.read_text()


def test_missing_ansible_playbook_names_the_venv(deploy: Deploy, tmp_path: Path) -> None:
    with pytest.raises(AiHowError, match="Kubespray's Ansible is not installed"):
        run_cluster_yml(
            deploy.kubespray,
            deploy.inventory,
            ansible_bin_dir=tmp_path / "no-venv" / "bin",
            ssh_key=tmp_path / "key",
            known_hosts=deploy.known_hosts,
            artifacts_dir=deploy.artifacts,
            log_path=deploy.log,
            on_event=deploy.events.append,
        )


# --------------------------------------------------------------------------- obtaining Kubespray


@dataclass(frozen=True)
class Pin:
    version: str
    commit: str | None
    repository: str
    checkout: str | None = None


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


def _commit(repo: Path, message: str) -> str:
    (repo / "CHANGELOG").write_text(message)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, str]:
    """A git repository shaped like Kubespray's with the tag v2.31.0; returns it and the tag's commit."""
    repo = _stand_in_kubespray(tmp_path / "upstream")
    _git(repo, "init", "-q", "-b", "master")
    commit = _commit(repo, "release v2.31.0")
    _git(repo, "tag", "v2.31.0")
    _commit(repo, "work after the release")  # the default branch moves on; the tag does not
    return repo, commit


def test_obtain_clones_the_pinned_tag_and_reuses_the_cache(
    upstream: tuple[Path, str], tmp_path: Path
) -> None:
    repo, commit = upstream
    log = tmp_path / "git.log"
    said: list[str] = []
    pin = Pin("v2.31.0", commit, repo.as_uri())

    path = obtain(pin, tmp_path / "cache", log_path=log, progress=said.append)
    assert path == tmp_path / "cache" / "kubespray-v2.31.0" and (path / "cluster.yml").is_file()
    assert head_commit(path, log_path=log) == commit
    assert "--depth 1 --branch v2.31.0" in log.read_text()

    # Cached: the repository is not even asked (it is gone).
    gone = replace(pin, repository=(tmp_path / "nowhere").as_uri())
    assert obtain(gone, tmp_path / "cache", log_path=log, progress=said.append) == path
    assert any("cached" in line for line in said)


def test_obtain_refuses_a_tag_at_another_commit(upstream: tuple[Path, str], tmp_path: Path) -> None:
    repo, commit = upstream
    wrong = "0" * 40
    with pytest.raises(AiHowError) as caught:
        obtain(
            Pin("v2.31.0", wrong, repo.as_uri()),
            tmp_path / "cache",
            log_path=tmp_path / "g.log",
            progress=print,
        )
    assert commit in caught.value.message and wrong in caught.value.message
    assert "kubernetes.kubespray.commit" in (caught.value.fix or "")
    assert list((tmp_path / "cache").iterdir()) == []  # the clone was removed


def test_obtain_clones_again_when_the_cache_is_at_another_commit(
    upstream: tuple[Path, str], tmp_path: Path
) -> None:
    repo, old = upstream
    log = tmp_path / "git.log"
    obtain(Pin("v2.31.0", old, repo.as_uri()), tmp_path / "cache", log_path=log, progress=print)
    _git(repo, "tag", "-f", "v2.31.0", "master")  # the user pins a re-tagged release on purpose
    new = _git(repo, "rev-parse", "master")
    path = obtain(Pin("v2.31.0", new, repo.as_uri()), tmp_path / "cache", log_path=log, progress=print)
    assert head_commit(path, log_path=log) == new


def test_obtain_verifies_an_existing_checkout(upstream: tuple[Path, str], tmp_path: Path) -> None:
    repo, tagged = upstream
    log = tmp_path / "git.log"
    head = _git(repo, "rev-parse", "HEAD")  # the checkout is on master, past the tag
    assert (
        obtain(Pin("v2.31.0", head, "unused", str(repo)), tmp_path / "cache", log_path=log, progress=print)
        == repo
    )

    with pytest.raises(AiHowError) as caught:
        obtain(Pin("v2.31.0", tagged, "unused", str(repo)), tmp_path / "cache", log_path=log, progress=print)
    assert head in caught.value.message and tagged in caught.value.message
    assert f"git -C {repo} checkout v2.31.0" in (caught.value.fix or "")
    assert not (tmp_path / "cache").exists()  # nothing cloned


# --------------------------------------------------------------------------- Kubespray's venv


def _wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel (so pip installs a real requirement without any index)."""
    files = {
        "standin_req/__init__.py": b"VALUE = 'installed from requirements.txt'\n",
        "standin_req-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: standin-req\nVersion: 1.0\n",
        "standin_req-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["standin_req-1.0.dist-info/RECORD"] = (
        "\n".join([*record, "standin_req-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = directory / "standin_req-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_venv_has_kubesprays_requirements_and_follows_their_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip's own setting: nothing is downloaded
    kubespray = _stand_in_kubespray(tmp_path / "kubespray")
    (kubespray / "requirements.txt").write_text(f"{_wheel(tmp_path)}\n")
    venv, log = tmp_path / "state" / "kubespray-venv", tmp_path / "venv.log"

    bin_dir = ensure_venv(kubespray, venv, log_path=log, progress=print)
    assert bin_dir == venv / "bin"
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", "import standin_req; print(standin_req.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "installed from requirements.txt"

    marker = venv / "marker"
    marker.touch()
    assert ensure_venv(kubespray, venv, log_path=log, progress=print) == bin_dir
    assert marker.exists()  # same requirements: reused

    (kubespray / "requirements.txt").write_text("")  # Kubespray's pins changed (another release)
    ensure_venv(kubespray, venv, log_path=log, progress=print)
    assert not marker.exists()  # recreated
    gone = subprocess.run(
        [str(bin_dir / "python"), "-c", "import standin_req"], capture_output=True, check=False
    )
    assert gone.returncode != 0


# --------------------------------------------------------------------------- SSH pre-flight


def _client_key(server: SSHServer) -> Path:
    return Path(server.options[server.options.index("-i") + 1])


def test_check_ssh_reaches_a_node_and_records_its_key(tmp_path: Path, ssh_server: SSHServer) -> None:
    port = ssh_server.login.rsplit(":", 1)[1]
    known_hosts = tmp_path / "ssh" / "known_hosts"
    check_ssh(
        [("k8s-cp-1", "127.0.0.1")],
        ssh_key=_client_key(ssh_server),
        known_hosts=known_hosts,
        log_path=tmp_path / "ssh.log",
        ssh_args=["-p", port, "-o", "User=root"],  # the test server's port and account
    )
    host_key = (_client_key(ssh_server).parent / "host_key.pub").read_text().split()[1]
    assert host_key in known_hosts.read_text()  # learned on first contact, enforced from then on


def test_check_ssh_refuses_a_changed_host_key(tmp_path: Path, ssh_server: SSHServer) -> None:
    port = ssh_server.login.rsplit(":", 1)[1]
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {other.with_suffix('.pub').read_text()}")
    with pytest.raises(AiHowError) as caught:
        check_ssh(
            [("k8s-cp-1", "127.0.0.1")],
            ssh_key=_client_key(ssh_server),
            known_hosts=known_hosts,
            log_path=tmp_path / "ssh.log",
            ssh_args=["-p", port, "-o", "User=root"],
        )
    assert "host key of k8s-cp-1 (127.0.0.1) differs" in caught.value.message
    assert f"ssh-keygen -f {known_hosts} -R" in (caught.value.fix or "")


def test_check_ssh_names_every_unreachable_node(tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    closed = free_port()
    with pytest.raises(AiHowError) as caught:
        check_ssh(
            [("k8s-cp-1", "127.0.0.1"), ("k8s-gpu-1", "192.0.2.1")],  # a closed port; TEST-NET-1 (no host)
            ssh_key=key,
            known_hosts=tmp_path / "known_hosts",
            log_path=tmp_path / "ssh.log",
            ssh_args=["-p", str(closed), "-o", "ConnectTimeout=2"],
        )
    error = caught.value
    assert "2 of 2 nodes" in error.message
    assert "k8s-cp-1 (127.0.0.1)" in error.message and "Connection refused" in error.message
    assert "k8s-gpu-1 (192.0.2.1)" in error.message
    assert "ai-how cloud start CONFIG" in (error.fix or "") and "console log" in (error.fix or "")
    assert "\n" not in str(error)
