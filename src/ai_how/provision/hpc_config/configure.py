"""Configure a started HPC cluster's VMs as a SLURM cluster: write the playbook, run it, report progress."""

from __future__ import annotations

from collections.abc import Callable

from ai_how.config.models import ClusterConfig
from ai_how.provision.ansible import progress_events
from ai_how.provision.hpc_config.ansible_run import run_playbook
from ai_how.provision.hpc_config.playbook import write_playbook
from ai_how.provision.spec import ClusterDefinition


def configure_slurm(
    config: ClusterConfig, cluster: ClusterDefinition, *, progress: Callable[[str], None]
) -> list[str]:
    """Run the SLURM playbook on the cluster's VMs (they must answer SSH); returns the playbook's notes."""
    playbook = write_playbook(config, cluster.workdir / "ansible", munge_key=cluster.workdir / "munge.key")
    for note in playbook.notes:
        progress(f"note: {note}")
    progress("configuring SLURM on the VMs (ansible-playbook)")
    run_playbook(
        playbook,
        ssh_key=cluster.ssh_key,
        known_hosts=cluster.known_hosts,
        log_path=cluster.log_dir / "ansible-slurm.log",
        on_line=progress_events(progress),
    )
    return list(playbook.notes)
