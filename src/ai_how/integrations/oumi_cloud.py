"""``ai-how`` as an Oumi launcher cloud: ``oumi launch up -c job.yaml`` with ``resources.cloud: ai-how``
runs the job on the SLURM cluster of the ai-how config, and ``oumi launch status/cancel/logs`` work.

Oumi imports this file when it is listed in the file named by ``OUMI_EXTRA_DEPS_FILE``
(``ai-how oumi config`` writes both). The ai-how config comes from ``AI_HOW_CONFIG``.
"""

from __future__ import annotations

import io
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oumi.core.configs import JobConfig
from oumi.core.launcher import BaseCloud, BaseCluster, JobState, JobStatus
from oumi.core.registry import register_cloud_builder

from ai_how.config.loader import load_config
from ai_how.executors.base import JobSpec
from ai_how.executors.slurm import SlurmExecutor
from ai_how.slurm.commands import JobInfo
from ai_how.state.store import StateStore, default_state_dir

CLOUD = "ai-how"
_STATES = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.PENDING,
    "COMPLETED": JobState.SUCCEEDED,
    "CANCELLED": JobState.CANCELLED,
}


def gpus_of(accelerators: str | None) -> int:
    """``gpu:2`` / ``A100:4`` / ``A100`` -> GPUs per node."""
    if not accelerators:
        return 0
    _, _, count = accelerators.partition(":")
    return int(count) if count.isdigit() else 1


def _job_name(name: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "oumi-job").strip("-") or "oumi-job"


class AiHowCluster(BaseCluster):
    """The HPC side of an ai-how config (its SLURM cluster) as an Oumi cluster."""

    def __init__(self, cluster_name: str, executor: SlurmExecutor, store: StateStore) -> None:
        self._name = cluster_name
        self.executor = executor
        self.store = store

    def name(self) -> str:
        return self._name

    def _record(self, job_id: str, **fields: Any) -> None:
        with self.store.transaction("oumi") as doc:
            doc.setdefault("jobs", {}).setdefault(job_id, {}).update(fields)

    def _status(self, job_id: str, info: JobInfo | None) -> JobStatus:
        known = self.store.read("oumi").get("jobs", {}).get(job_id, {})
        if info is None:
            state, status = JobState.FAILED, "UNKNOWN"
        else:
            state = _STATES.get(info.state, JobState.FAILED if info.finished else JobState.RUNNING)
            if info.state == "COMPLETED" and info.exit_code != 0:
                state = JobState.FAILED
            status = info.state
        return JobStatus(
            name=known.get("name", ""),
            id=job_id,
            status=status,
            cluster=self._name,
            metadata=f"exit code {info.exit_code}; log {known.get('stdout', '')}" if info else "",
            done=state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED),
            state=state,
            submit_time=known.get("submitted"),
        )

    def get_job(self, job_id: str) -> JobStatus:
        return self._status(job_id, self.executor.client.job(job_id))

    def get_jobs(self) -> list[JobStatus]:
        jobs = self.store.read("oumi").get("jobs", {})
        return [self.get_job(job_id) for job_id, job in jobs.items() if job.get("cluster") == self._name]

    def cancel_job(self, job_id: str) -> JobStatus:
        self.executor.client.cancel(job_id)
        deadline = time.monotonic() + 30
        status = self.get_job(job_id)
        while not status.done and time.monotonic() < deadline:
            time.sleep(0.5)
            status = self.get_job(job_id)
        return status

    def run_job(self, job: JobConfig) -> JobStatus:
        script = "\n".join(part for part in (job.setup, job.run) if part)
        if not script.strip():
            raise ValueError("the job has no `run` commands")
        name = _job_name(job.name)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        spec = JobSpec(
            name=f"oumi-{name}-{stamp}",
            workload=name,
            args=[],
            output_dir=Path(self.executor.shared),
            log_path=Path(self.executor.shared) / "jobs" / f"oumi-{name}-{stamp}.submit.log",
            env={k: str(v) for k, v in (job.envs or {}).items()},
            gpus=gpus_of(job.resources.accelerators),
            nodes=max(1, job.num_nodes or 1),
            script=script,
            workdir=str(Path(job.working_dir).expanduser().resolve()) if job.working_dir else None,
        )
        job_id, stdout, stderr = self.executor.submit(spec)
        self._record(
            job_id,
            name=job.name or name,
            cluster=self._name,
            stdout=stdout,
            stderr=stderr,
            submitted=time.time(),
        )
        return self.get_job(job_id)

    def stop(self) -> None:
        """A SLURM cluster stays up; stopping cancels this cloud's unfinished jobs."""
        for status in self.get_jobs():
            if not status.done:
                self.executor.client.cancel(status.id)

    def down(self) -> None:
        self.stop()

    def get_logs_stream(self, cluster_name: str, job_id: str | None = None) -> io.TextIOBase:
        jobs = self.store.read("oumi").get("jobs", {})
        if job_id is None:
            if not jobs:
                raise FileNotFoundError("no jobs were launched on this cluster")
            job_id = max(jobs, key=lambda j: jobs[j].get("submitted", 0))
        return _FollowingLog(self, job_id, jobs.get(job_id, {}).get("stdout", ""))


class _FollowingLog(io.TextIOBase):
    """``readline`` follows the job's output file until the job has finished, then reports EOF."""

    def __init__(self, cluster: AiHowCluster, job_id: str, path: str) -> None:
        self.cluster, self.job_id, self.path = cluster, job_id, path
        self.offset = 0
        self.buffer = ""

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        while "\n" not in self.buffer:
            chunk = self.cluster.executor.client.transport.read_from(self.path, self.offset)
            if chunk:
                self.offset += len(chunk)
                self.buffer += chunk.decode("utf-8", "replace")
                continue
            if self.cluster.get_job(self.job_id).done:
                line, self.buffer = self.buffer, ""
                return line
            time.sleep(0.5)
        line, _, self.buffer = self.buffer.partition("\n")
        return line + "\n"


class AiHowCloud(BaseCloud):
    def __init__(self) -> None:
        config_path = os.environ.get("AI_HOW_CONFIG")
        if not config_path:
            raise RuntimeError(
                "the ai-how cloud needs AI_HOW_CONFIG=<cluster.yaml> (see `ai-how oumi config`)"
            )
        config = load_config(config_path).config
        state_dir = (
            Path(os.environ["AI_HOW_STATE_DIR"])
            if os.environ.get("AI_HOW_STATE_DIR")
            else default_state_dir()
        )
        if config.clusters.hpc is None:
            raise RuntimeError(f"{config_path} defines no clusters.hpc")
        self.cluster = AiHowCluster(
            config.clusters.hpc.name, SlurmExecutor(config, state_dir), StateStore(state_dir)
        )

    def up_cluster(self, job: JobConfig, name: str | None, **kwargs: Any) -> JobStatus:
        cluster = self.get_cluster(name or self.cluster.name())
        if cluster is None:
            raise ValueError(f"the ai-how cloud has one cluster, {self.cluster.name()!r}, not {name!r}")
        return cluster.run_job(job)

    def get_cluster(self, name: str) -> BaseCluster | None:
        return self.cluster if name == self.cluster.name() else None

    def list_clusters(self) -> list[BaseCluster]:
        return [self.cluster]


@register_cloud_builder(CLOUD)
def ai_how_cloud_builder() -> AiHowCloud:
    return AiHowCloud()
