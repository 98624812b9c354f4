"""The executor interface: run one training job to completion (or cancel it) and report how it ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ai_how.errors import AiHowError
from ai_how.layout import Layout

if TYPE_CHECKING:
    from ai_how.config.models import ClusterConfig


@dataclass
class JobSpec:
    name: str
    workload: str
    args: list[str]
    output_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    gpus: int = 0  # GPUs per node (SLURM GRES)
    processes: int = 1  # processes per node when gpus == 0 (CPU data parallel, gloo)
    nodes: int = 1
    script: str | None = None  # shell commands to run instead of a workload (Oumi launcher jobs)
    workdir: str | None = None


@dataclass
class JobResult:
    job_id: str
    returncode: int
    log_path: Path
    duration_s: float


class JobFailedError(AiHowError):
    """The job ran and failed; the message carries the tail of its log."""


class Executor(Protocol):
    name: str

    def run(self, spec: JobSpec, on_line: Callable[[str], None] | None = None) -> JobResult:
        """Run to completion. Raises JobFailedError on failure; cancels the job on KeyboardInterrupt."""
        ...


ExecutorFactory = Callable[["ClusterConfig", Path], Executor]


def shared_root(config: ClusterConfig, state_dir: Path) -> str:
    """The HPC side's shared filesystem (BeeGFS in the reference design); <state>/shared in embedded mode."""
    hpc = config.clusters.hpc
    if hpc is not None and hpc.storage is not None:
        return hpc.storage.mount_point
    return str(Layout(state_dir).shared)


def _local(config: ClusterConfig, state_dir: Path) -> Executor:
    from ai_how.executors.local import LocalExecutor

    return LocalExecutor(state_dir)


def _slurm(config: ClusterConfig, state_dir: Path) -> Executor:
    from ai_how.executors.slurm import SlurmExecutor

    return SlurmExecutor(config, state_dir)


# The one registry of executors, keyed by clusters.hpc.scheduler; imports are lazy.
EXECUTORS: dict[str, ExecutorFactory] = {"local": _local, "slurm": _slurm}


def executor_for(config: ClusterConfig, state_dir: Path) -> Executor:
    scheduler = config.clusters.hpc.scheduler if config.clusters.hpc else "local"
    factory = EXECUTORS.get(scheduler)
    if factory is None:
        raise AiHowError(
            f"no executor for clusters.hpc.scheduler: {scheduler} in this version",
            fix=f"use one of: {', '.join(EXECUTORS)}",
        )
    return factory(config, state_dir)
