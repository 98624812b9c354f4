"""Local executor: the workload runs as a child process of this machine (the embedded default)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ai_how.executors.base import JobFailedError, JobResult, JobSpec
from ai_how.procs import run_logged

# Exit code 2 from a workload means bad input (its last stderr line says which).
EXIT_BAD_INPUT = 2


def workload_command(spec: JobSpec, python: str = sys.executable) -> list[str]:
    workload = ["-m", "ai_how.workloads", spec.workload, "--output", str(spec.output_dir), *spec.args]
    per_node = spec.gpus if spec.gpus > 0 else spec.processes
    if per_node > 1:  # data parallel on this machine: torchrun with a local rendezvous
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(per_node),
            *workload,
        ]
    return [python, *workload]


def job_env(spec: JobSpec, state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "AI_HOW_MODEL_CACHE": str(state_dir / "models"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(spec.env)
    return env


def failure_message(spec: JobSpec, returncode: int, tail: str) -> JobFailedError:
    lines = [line for line in tail.splitlines() if line.strip()]
    cause = next(
        (line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), None
    )
    if returncode == EXIT_BAD_INPUT and cause:
        return JobFailedError(f"{spec.workload}: {cause}")
    shown = "\n".join(lines[-15:])
    return JobFailedError(
        f"{spec.workload} job exited with code {returncode}:\n{shown}", fix=f"see {spec.log_path}"
    )


class LocalExecutor:
    name = "local"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def run(self, spec: JobSpec, on_line: Callable[[str], None] | None = None) -> JobResult:
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        job_id = f"local-{spec.name}"
        env = job_env(spec, self.state_dir) | {"AI_HOW_JOB_ID": job_id}
        done = run_logged(workload_command(spec), log_path=spec.log_path, env=env, on_line=on_line)
        if done.returncode != 0:
            raise failure_message(spec, done.returncode, done.tail(40))
        return JobResult(job_id, done.returncode, spec.log_path, done.duration_s)
