"""Parsing what SLURM's commands print, and the flags each SLURM version supports.

Parsers are tested against recorded real output (tests/executors/fixtures/).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# Job states after which a job never runs again.
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
}
# What a failed state means, in words a user acts on.
FAILURES = {
    "FAILED": "failed",
    "OUT_OF_MEMORY": "ran out of memory (raise clusters.hpc.slurm.mem)",
    "TIMEOUT": "hit its time limit (raise clusters.hpc.slurm.time)",
    "NODE_FAIL": "lost its node (node failure)",
    "CANCELLED": "was cancelled",
    "PREEMPTED": "was preempted",
    "BOOT_FAIL": "could not boot its node",
    "DEADLINE": "missed its deadline",
    "SPECIAL_EXIT": "ended in SPECIAL_EXIT",
    "REVOKED": "was revoked",
}


@dataclass(frozen=True, order=True)
class SlurmVersion:
    major: int
    minor: int
    micro: int = 0

    @classmethod
    def parse(cls, text: str) -> SlurmVersion:
        """``slurm 22.05.8`` / ``slurm-wlm 22.05.8`` / ``slurm 24.11.0-1`` -> SlurmVersion."""
        match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
        if not match:
            raise ValueError(f"not a SLURM version: {text.strip()!r}")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor:02d}.{self.micro}"


@dataclass(frozen=True)
class Features:
    """Flags that depend on the SLURM version (probed once per executor)."""

    version: SlurmVersion
    squeue_json: bool  # `squeue --json` (21.08+)
    sacct_json: bool  # `sacct --json` (23.02+; absent from 22.05)
    only_job_state: bool  # `squeue --only-job-state` (23.02+; SLURM 20.x lacks it, skypilot#8907)
    gpus_per_node: bool  # `--gpus-per-node` (19.05+); otherwise only --gres=gpu:N

    @classmethod
    def of(cls, version: SlurmVersion) -> Features:
        return cls(
            version=version,
            squeue_json=version >= SlurmVersion(21, 8),
            sacct_json=version >= SlurmVersion(23, 2),
            only_job_state=version >= SlurmVersion(23, 2),
            gpus_per_node=version >= SlurmVersion(19, 5),
        )


@dataclass
class JobInfo:
    job_id: str
    state: str
    reason: str = ""
    exit_code: int = 0
    signal: int = 0
    nodelist: str = ""
    stdout: str = ""
    stderr: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0


def parse_scontrol_job(line: str) -> JobInfo:
    """One line of ``scontrol -o show job ID`` (Key=Value pairs) -> JobInfo."""
    fields: dict[str, str] = {}
    for token in shlex.split(line.strip(), posix=False) if line.strip() else []:
        key, sep, value = token.partition("=")
        if sep:
            fields.setdefault(key, value)
    if "JobId" not in fields or "JobState" not in fields:
        raise ValueError(f"not an scontrol job line: {line[:80]!r}")
    code, _, sig = fields.get("ExitCode", "0:0").partition(":")
    nodelist = fields.get("NodeList", "")
    return JobInfo(
        job_id=fields["JobId"],
        state=fields["JobState"],
        reason=fields.get("Reason", ""),
        exit_code=int(code or 0),
        signal=int(sig or 0),
        nodelist="" if nodelist == "(null)" else nodelist,
        stdout=fields.get("StdOut", ""),
        stderr=fields.get("StdErr", ""),
        fields=fields,
    )


def parse_sacct(text: str, job_id: str) -> JobInfo | None:
    """``sacct -j ID -P -n -o JobID,State,ExitCode,NodeList`` -> the job's own line (not its steps)."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and parts[0] == job_id:
            state = parts[1].split()[0]  # "CANCELLED by 0" -> CANCELLED
            code, _, sig = parts[2].partition(":")
            return JobInfo(
                job_id,
                state,
                exit_code=int(code or 0),
                signal=int(sig or 0),
                nodelist=parts[3] if len(parts) > 3 else "",
            )
    return None


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``ID`` or ``ID;cluster``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    job_id = first.split(";")[0]
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {text.strip()[:200]!r}")
    return job_id
