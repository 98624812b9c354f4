"""What every workload shares: its errors, output files and the entry point executors run."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text

RESULT_FILE = "result.json"  # {"metrics", "params", "dataset_sha256", "kind", ...}
METRICS_FILE = "metrics.json"


class WorkloadError(AiHowError):
    """Bad workload input (missing dataset, bad parameter); exit code 2 from the job."""


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass
class Distributed:
    """The process's place in a torchrun job (world size 1 when started alone)."""

    rank: int
    local_rank: int
    world_size: int

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        me = cls(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
        if world > 1:
            import torch
            from torch import distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return me

    def device(self) -> Any:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def finish(self) -> None:
        if self.world_size > 1:
            from torch import distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def job_id() -> str:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("AI_HOW_JOB_ID") or f"local-{os.getpid()}"


def run_workload(name: str, argv: list[str]) -> int:
    """Entry point executors call: ``python -m ai_how.workloads NAME --output DIR ...``."""
    from ai_how.workloads import WORKLOADS, load

    if name not in WORKLOADS:
        print(f"error: unknown workload {name!r}; known: {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    module = load(name)
    args = module.parser().parse_args(argv)
    try:
        result = module.train(args)
    except AiHowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_rank_zero():  # in a data-parallel job only rank 0 writes the outputs
        return 0
    result["job_id"] = job_id()
    result["workload"] = name
    write_json(args.output / METRICS_FILE, result["metrics"])
    write_json(args.output / RESULT_FILE, result)
    print(f"workload {name} finished: {args.output}", flush=True)
    return 0
