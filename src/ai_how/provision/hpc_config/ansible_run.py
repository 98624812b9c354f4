"""Run ``ansible-playbook`` on the generated SLURM files over SSH (the shared runner: :mod:`ai_how.provision.ansible`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ai_how.provision.ansible import ansible_env, ansible_playbook, run_ansible
from ai_how.provision.hpc_config.playbook import SlurmPlaybook


def run_playbook(
    playbook: SlurmPlaybook,
    *,
    ssh_key: Path,
    known_hosts: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float = 1800,
) -> None:
    """Configure the HPC VMs: run the generated playbook over SSH as ai-how's admin user.

    Raises AiHowError naming the failed task, its host and the log when the playbook fails.
    """
    command = [
        ansible_playbook(),
        "-i", str(playbook.inventory),
        "--private-key", str(ssh_key),
        str(playbook.playbook),
    ]  # fmt: skip
    run_ansible(
        command,
        what="configuring the HPC VMs",
        cwd=playbook.out_dir,
        env=ansible_env(playbook.out_dir, known_hosts=known_hosts),
        known_hosts=known_hosts,
        log_path=log_path,
        on_line=on_line,
        timeout_s=timeout_s,
    )
