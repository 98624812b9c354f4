"""SSH to the VMs: the key ai-how generates per cluster, the command line, and waiting for a node to answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.procs import port_open, run_logged
from ai_how.provision.cloudinit import ADMIN_USER


def ensure_key(private: Path, *, comment: str, log_path: Path) -> str:
    """The cluster's ed25519 key pair (created once, private part 0600); returns the public key line.

    A lost ``.pub`` is derived again from the private key: the VMs only accept the key they were
    seeded with, so an existing private key is never replaced.
    """
    public = private.with_name(private.name + ".pub")
    if private.is_file():
        private.chmod(0o600)
        if not public.is_file():
            _keygen(["ssh-keygen", "-y", "-f", str(private)], log_path, private, capture=public)
    else:
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        public.unlink(missing_ok=True)
        _keygen(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
            log_path,
            private,
        )
    return public.read_text(encoding="utf-8").strip()


def _keygen(cmd: list[str], log_path: Path, private: Path, *, capture: Path | None = None) -> None:
    lines: list[str] = []
    done = run_logged(cmd, log_path=log_path, timeout_s=30, on_line=lines.append)
    ok = done.returncode == 0
    if capture is not None:  # `ssh-keygen -y` prints the public key (never the private one)
        public = next((line for line in lines if line.startswith("ssh-")), None)
        ok = ok and public is not None
        if public is not None:
            atomic_write_text(capture, public + "\n")
    if not ok:
        raise AiHowError(
            f"ssh-keygen could not use {private}", fix=f"see {log_path}, or remove {private.parent}"
        )


def ssh_options(*, known_hosts: Path, connect_timeout_s: int = 10) -> list[str]:
    """The options of every SSH connection to a VM (ai-how's and Ansible's). A VM's host key is learned
    on first contact and then enforced (``accept-new`` into the cluster's own known_hosts), never ignored."""
    return [
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"ConnectTimeout={connect_timeout_s}",
    ]  # fmt: skip


def ssh_command(ip: IPv4Address | str, *, key: Path, known_hosts: Path) -> list[str]:
    """``ssh`` to the admin account of a VM."""
    return ["ssh", "-i", str(key), *ssh_options(known_hosts=known_hosts), f"{ADMIN_USER}@{ip}"]


def wait_for_node(
    name: str,
    ip: IPv4Address,
    *,
    key: Path,
    known_hosts: Path,
    deadline: float,
    log_path: Path,
    progress: Callable[[str], None],
) -> float:
    """Wait until the VM answers SSH with ai-how's key and cloud-init has finished; returns seconds waited."""
    start = time.monotonic()
    while not port_open(str(ip), 22, timeout_s=1.0):
        if time.monotonic() > deadline:
            raise AiHowError(
                f"{name} ({ip}) did not open SSH in time",
                fix="look at its serial console log; raise --timeout for slow (TCG) guests",
            )
        time.sleep(2)
    progress(f"{name}: SSH port open after {time.monotonic() - start:.0f} s; waiting for cloud-init")
    while True:
        remaining = deadline - time.monotonic()
        done = run_logged(
            [*ssh_command(ip, key=key, known_hosts=known_hosts), "cloud-init", "status", "--wait"],
            log_path=log_path,
            timeout_s=max(remaining, 5),
        )
        if done.returncode in (0, 2):  # 2: done with recoverable warnings (cloud-init >= 23.4)
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AiHowError(
                f"{name} ({ip}): cloud-init did not finish (or SSH with ai-how's key failed)",
                fix=f"see {log_path} and the VM's serial console log",
            )
        time.sleep(3)  # sshd may accept connections before cloud-init has installed the key
