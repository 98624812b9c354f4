"""Running Kubespray's ``cluster.yml`` on the cloud VMs: SSH pre-flight, the playbook with streamed progress,
and the admin kubeconfig it leaves in ``artifacts_dir``.

The run goes through the shared runner (:mod:`ai_how.provision.ansible`): ai-how's known_hosts and SSH
options win over Kubespray's ``ansible.cfg``, and a failed task ends in one error naming it, its host and
the log. Re-running is safe: ``cluster.yml`` is idempotent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import yaml

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write, atomic_write_text
from ai_how.procs import run_logged
from ai_how.provision.ansible import HOST_KEY_CHANGED, ansible_env, one_line, progress_events, run_ansible
from ai_how.provision.ssh import ssh_command

INVENTORY_NAMES = ("hosts.yaml", "hosts.yml", "inventory.ini")
EXTRA_VARS_NAME = "ai-how-extra-vars.yaml"


# --------------------------------------------------------------------------- SSH pre-flight


def check_ssh(
    hosts: Sequence[tuple[str, IPv4Address | str]],
    *,
    ssh_key: Path,
    known_hosts: Path,
    log_path: Path,
    ssh_args: Sequence[str] = (),
) -> None:
    """``ssh NODE true`` with the cluster's key to every node; one error naming every node that did not answer.

    ``ssh_args`` go before ai-how's own options (ssh keeps the first value of each), e.g. ``-p PORT``.
    """
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    unreachable: list[str] = []
    changed_keys: list[str] = []
    for name, ip in hosts:
        base = ssh_command(ip, key=ssh_key, known_hosts=known_hosts)
        said: list[str] = []
        done = run_logged(
            [base[0], *ssh_args, *base[1:], "true"], log_path=log_path, timeout_s=60, on_line=said.append
        )
        if done.returncode == 0:
            continue
        if any(HOST_KEY_CHANGED in line for line in said):
            changed_keys.append(f"{name} ({ip})")
        reason = next((line for line in reversed(said) if line.strip()), f"ssh exited with {done.returncode}")
        unreachable.append(f"{name} ({ip}): {one_line(reason, 120)}")
    if changed_keys:
        raise AiHowError(
            f"the SSH host key of {', '.join(changed_keys)} differs from the one recorded in {known_hosts}",
            fix=f"if the VM was recreated, forget its old key with `ssh-keygen -f {known_hosts} -R ADDRESS`; "
            f"see {log_path}",
        )
    if unreachable:
        raise AiHowError(
            f"{len(unreachable)} of {len(hosts)} nodes do not answer SSH with ai-how's key: "
            + "; ".join(unreachable),
            fix="start the VMs first (`ai-how cloud start CONFIG`); if they run, check each VM's console log "
            f"and {log_path}",
        )


# --------------------------------------------------------------------------- cluster.yml


def inventory_file(inventory_dir: Path) -> Path:
    """The inventory in ``inventory_dir`` (its group_vars/ sit beside it, where Ansible looks for them)."""
    for name in INVENTORY_NAMES:
        if (inventory_dir / name).is_file():
            return inventory_dir / name
    raise AiHowError(
        f"{inventory_dir} holds no Kubespray inventory ({' or '.join(INVENTORY_NAMES)})",
        fix="generate it first (`ai-how cloud deploy CONFIG` writes it before running Kubespray)",
    )


def _playbook_command(
    kubespray_dir: Path,
    inventory: Path,
    extra_vars_file: Path,
    *,
    ansible_bin_dir: Path,
    ssh_key: Path,
    tags: Sequence[str] | None,
    limit: str | None,
) -> list[str]:
    binary = ansible_bin_dir / "ansible-playbook"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise AiHowError(
            f"{binary} does not exist, so Kubespray's Ansible is not installed",
            fix=f"remove {ansible_bin_dir.parent} so that ai-how creates Kubespray's venv again",
        )
    if not (kubespray_dir / "cluster.yml").is_file():
        raise AiHowError(f"{kubespray_dir} has no cluster.yml", fix="point it at a Kubespray checkout")
    command = [
        str(binary),
        "-i", str(inventory),
        "-b",
        "--private-key", str(ssh_key),
        "-e", f"@{extra_vars_file}",
    ]  # fmt: skip
    if tags:
        command += ["--tags", ",".join(tags)]
    if limit:
        command += ["--limit", limit]
    return [*command, "cluster.yml"]


def run_cluster_yml(
    kubespray_dir: Path,
    inventory_dir: Path,
    *,
    ansible_bin_dir: Path,
    ssh_key: Path,
    known_hosts: Path,
    artifacts_dir: Path,
    extra_vars: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    limit: str | None = None,
    log_path: Path,
    on_event: Callable[[str], None],
    timeout_s: float = 3 * 3600,
) -> None:
    """Run Kubespray's ``cluster.yml`` (``-b``, ai-how's key) on the inventory in ``inventory_dir``.

    ``on_event`` gets each PLAY and TASK with the seconds elapsed, and each host's recap; the full output
    goes to ``log_path``. ``artifacts_dir`` is passed as an extra variable: with ``kubeconfig_localhost``
    set, Kubespray writes ``admin.conf`` there. Raises AiHowError naming the failed task, host and log.
    """
    inventory = inventory_file(inventory_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    extra_vars_file = inventory_dir / EXTRA_VARS_NAME
    variables = {**(extra_vars or {}), "artifacts_dir": str(artifacts_dir)}
    atomic_write_text(extra_vars_file, yaml.safe_dump(variables, sort_keys=True))
    command = _playbook_command(
        kubespray_dir,
        inventory,
        extra_vars_file,
        ansible_bin_dir=ansible_bin_dir,
        ssh_key=ssh_key,
        tags=tags,
        limit=limit,
    )
    env = ansible_env(inventory_dir, known_hosts=known_hosts)
    if (
        kubespray_dir / "ansible.cfg"
    ).is_file():  # its roles_path and library, whatever the cwd's permissions
        env["ANSIBLE_CONFIG"] = str(kubespray_dir / "ansible.cfg")
    run_ansible(
        command,
        what="Kubespray's cluster.yml",
        cwd=kubespray_dir,
        env=env,
        known_hosts=known_hosts,
        log_path=log_path,
        on_line=progress_events(on_event),
        timeout_s=timeout_s,
    )


# --------------------------------------------------------------------------- kubeconfig


def _with_server(kubeconfig: dict[str, Any], server: str, source: Path) -> dict[str, Any]:
    """Every cluster's ``server`` URL pointed at ``server`` (an address), its scheme and port kept."""
    clusters = kubeconfig.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        raise AiHowError(f"{source} lists no clusters", fix="re-run `ai-how cloud deploy CONFIG`")
    host = f"[{server}]" if ":" in server else server
    for entry in clusters:
        url = urlsplit(str(entry["cluster"]["server"]))
        netloc = f"{host}:{url.port}" if url.port else host
        entry["cluster"]["server"] = urlunsplit(url._replace(netloc=netloc))
    return kubeconfig


def fetch_kubeconfig(artifacts_dir: Path, dest: Path, *, server: str | None = None) -> Path:
    """Copy Kubespray's ``artifacts_dir/admin.conf`` to ``dest`` (mode 0600, replaced atomically), its API
    server address rewritten to ``server`` when given."""
    source = artifacts_dir / "admin.conf"
    if not source.is_file():
        raise AiHowError(
            f"Kubespray left no admin.conf in {artifacts_dir}",
            fix="kubeconfig_localhost must be true in the group_vars; re-run `ai-how cloud deploy CONFIG`",
        )
    try:
        kubeconfig = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AiHowError(f"{source} is not valid YAML: {one_line(str(exc), 120)}") from None
    if not isinstance(kubeconfig, dict):
        raise AiHowError(f"{source} is not a kubeconfig", fix="re-run `ai-how cloud deploy CONFIG`")
    try:
        if server:
            kubeconfig = _with_server(kubeconfig, server, source)
    except (KeyError, TypeError):
        raise AiHowError(f"{source} has a cluster without a server URL") from None
    data = yaml.safe_dump(kubeconfig, sort_keys=False).encode("utf-8")

    def write(handle: BinaryIO) -> None:
        os.fchmod(handle.fileno(), 0o600)  # before the credentials go in
        handle.write(data)

    atomic_write(dest, write)
    return dest
