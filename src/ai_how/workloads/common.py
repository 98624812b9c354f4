"""What every workload shares: its errors, output files and the entry point executors run."""

from __future__ import annotations

import json
import os
import sys
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
    result["job_id"] = job_id()
    result["workload"] = name
    write_json(args.output / METRICS_FILE, result["metrics"])
    write_json(args.output / RESULT_FILE, result)
    print(f"workload {name} finished: {args.output}", flush=True)
    return 0
