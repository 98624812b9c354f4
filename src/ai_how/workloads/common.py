"""What every workload shares: its errors, output files and the entry point executors run."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ai_how.errors import AiHowError
from ai_how.extras import missing_extra
from ai_how.fsutil import atomic_write, atomic_write_text

T = TypeVar("T")

RESULT_FILE = "result.json"  # {"metrics", "params", "dataset_sha256", "kind", ...}
METRICS_FILE = "metrics.json"


class WorkloadError(AiHowError):
    """Bad workload input (missing dataset, bad parameter); exit code 2 from the job."""


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a file so that readers of ``target`` see the old file or the whole new one."""
    with source.open("rb") as reader:
        atomic_write(target, lambda handle: shutil.copyfileobj(reader, handle, 1 << 20))


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
                if torch.cuda.is_available():  # NCCL collectives run on this rank's device
                    torch.cuda.set_device(me.local_rank)
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return me

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rank_zero_prepares(self, prepare: Callable[[], T]) -> T:
        """Rank 0 runs ``prepare`` (it writes the shared inputs: datasets, tokenizer, base model); the
        other ranks wait for it in a collective (the barrier) and get its return value, or its error.

        No two ranks ever write the same file, and no rank reads an input before it is complete.
        """
        if self.world_size == 1:
            return prepare()
        from torch import distributed as dist

        if self.is_main:
            try:
                value = prepare()
            except BaseException as exc:  # release the waiting ranks with the reason, then fail
                reason = (
                    (exc.message, exc.fix)
                    if isinstance(exc, AiHowError)
                    else (
                        f"rank 0 failed to prepare the shared inputs: {type(exc).__name__}",
                        "see rank 0's log",
                    )
                )
                dist.broadcast_object_list([("error", *reason)], src=0)
                raise
            dist.broadcast_object_list([("ok", value)], src=0)  # sent only once the inputs are written
            return value
        payload: list[Any] = [None]
        dist.broadcast_object_list(payload, src=0)
        status, *rest = payload[0]
        if status == "error":
            raise WorkloadError(rest[0], fix=rest[1])
        return rest[0]  # type: ignore[no-any-return]

    def device(self) -> Any:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def release(self) -> None:
        """Leave the process group so that a library that creates its own (Oumi's train) can start it."""
        if self.world_size > 1:
            from torch import distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def finish(self) -> None:
        """Wait for every rank, then leave the process group (when a library has not left it already)."""
        if self.world_size > 1:
            from torch import distributed as dist

            if dist.is_initialized():
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
    try:
        module = load(name)
        args = module.parser().parse_args(argv)
        result = module.train(args)
    except AiHowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # a missing optional dependency names the extra to install
        error = missing_extra(exc)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not is_rank_zero():  # in a data-parallel job only rank 0 writes the outputs
        return 0
    result["job_id"] = job_id()
    result["workload"] = name
    write_json(args.output / METRICS_FILE, result["metrics"])
    write_json(args.output / RESULT_FILE, result)
    print(f"workload {name} finished: {args.output}", flush=True)
    return 0
