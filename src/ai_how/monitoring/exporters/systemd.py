"""The systemd unit that runs ``ai-how exporter slurm`` on the HPC controller."""

from __future__ import annotations

import shlex
from pathlib import Path

UNIT_NAME = "ai-how-slurm-exporter.service"


def _exec_word(word: str) -> str:
    """One ExecStart word: shell-style quoting (systemd reads it), '%' and '$' kept literal."""
    return shlex.quote(word).replace("%", "%%").replace("$", "$$")


def slurm_exporter_unit(ai_how: Path, *, host: str, port: int, config: Path | None = None) -> str:
    """The unit text: a dynamic unprivileged user, restarted on failure, started after slurmctld."""
    argv = [str(ai_how), "exporter", "slurm", "--host", host, "--port", str(port)]
    if config is not None:
        argv += ["--config", str(config)]
    lines = [
        "# ai-how SLURM exporter: install as /etc/systemd/system/" + UNIT_NAME,
        "# then: systemctl daemon-reload && systemctl enable --now " + UNIT_NAME,
        "[Unit]",
        "Description=ai-how SLURM exporter for Prometheus (slurm_nodes_*, slurm_cpus_*, slurm_gpus_*, slurm_queue_*)",
        "After=network-online.target munge.service slurmctld.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_exec_word(word) for word in argv),
        "Restart=on-failure",
        "RestartSec=5",
        # Reads SLURM with sinfo/squeue as an unprivileged user; with PrivateData=jobs in slurm.conf
        # replace DynamicUser=yes by User=slurm to see every user's jobs.
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "Environment=PYTHONUNBUFFERED=1",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
