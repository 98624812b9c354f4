"""Executors run training workloads: locally now, on SLURM through the same interface."""

from ai_how.executors.base import EXECUTORS, Executor, JobFailedError, JobResult, JobSpec, executor_for

__all__ = ["EXECUTORS", "Executor", "JobFailedError", "JobResult", "JobSpec", "executor_for"]
