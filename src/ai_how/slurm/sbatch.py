"""sbatch scripts a SLURM admin would write, rendered from the config and a job spec.

- one process: the workload runs directly in the batch step;
- several processes (GPUs from GRES, or CPU processes) on 1..N nodes: one ``srun`` task per node
  starts ``torchrun`` with ``--nproc_per_node`` = GPUs per node, ``MASTER_ADDR`` = the first host of
  the allocation (expanded with ``scontrol show hostnames``) and ``--node_rank`` = ``SLURM_NODEID``;
- llm-sft on several GPUs goes through ``oumi distributed torchrun`` (Oumi reads the same SLURM variables);
- with ``container_runtime: apptainer`` every command runs in ``apptainer exec --nv IMAGE``.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ai_how.config.models import SlurmConfig
from ai_how.executors.base import JobSpec
from ai_how.slurm.commands import Features

OFFLINE_ENV = {
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class JobPaths:
    script: str
    stdout: str  # with %j
    stderr: str

    def resolved(self, job_id: str) -> tuple[str, str]:
        return self.stdout.replace("%j", job_id), self.stderr.replace("%j", job_id)


def job_paths(shared_root: str, spec: JobSpec) -> JobPaths:
    """The seed's BeeGFS layout: scripts and logs under jobs/, models under models/."""
    jobs = f"{shared_root.rstrip('/')}/jobs"
    out = f"{jobs}/{spec.workload}-%j.out"
    # A user's script job (Oumi) gets one log, so `oumi launch logs` shows its errors too.
    err = out if spec.script is not None else f"{jobs}/{spec.workload}-%j.err"
    return JobPaths(f"{jobs}/{spec.name}.sbatch", out, err)


def _partition(slurm: SlurmConfig) -> str | None:
    return next((p.name for p in slurm.partitions if p.default), None)


def render(spec: JobSpec, slurm: SlurmConfig, features: Features, paths: JobPaths) -> str:
    python = slurm.python or sys.executable
    per_node = spec.gpus if spec.gpus > 0 else spec.processes
    distributed = spec.nodes > 1 or per_node > 1
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=ai-how-{spec.workload}",
        f"#SBATCH --output={paths.stdout}",
        f"#SBATCH --error={paths.stderr}",
    ]
    if (partition := _partition(slurm)) is not None:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        f"#SBATCH --nodes={spec.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={max(slurm.cpus_per_task, per_node if spec.gpus == 0 else 1)}",
        f"#SBATCH --mem={slurm.mem}",
        f"#SBATCH --time={slurm.time}",
    ]
    if spec.gpus > 0:
        # --gres works on every version; --gpus-per-node only from 19.05.
        lines.append(f"#SBATCH --gres=gpu:{spec.gpus}")
    lines += ["", "set -euo pipefail"]
    env = OFFLINE_ENV | spec.env
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [
        'export AI_HOW_JOB_ID="$SLURM_JOB_ID"',
        'echo "ai-how job $SLURM_JOB_ID: $SLURM_JOB_NUM_NODES node(s) $SLURM_JOB_NODELIST, '
        'GPUs ${CUDA_VISIBLE_DEVICES:-none}"',
    ]
    container = (
        ["apptainer", "exec", "--nv", slurm.container_image]
        if slurm.container_runtime == "apptainer" and slurm.container_image
        else []
    )
    workload = ["-m", "ai_how.workloads", spec.workload, "--output", str(spec.output_dir), *spec.args]
    if spec.workdir:
        lines.append(f"cd {shlex.quote(spec.workdir)}")
    if spec.script is not None:  # a user's job (Oumi JobConfig setup + run): their commands, as written
        lines.append(spec.script.rstrip("\n"))
    elif not distributed:
        lines.append(shlex.join([*container, python, *workload]))
    else:
        lines += [
            'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            f'export MASTER_ADDR MASTER_PORT="${{MASTER_PORT:-{slurm.master_port}}}"',
        ]
        if spec.workload == "llm-sft" and spec.gpus > 0:
            oumi = str(Path(python).parent / "oumi")
            launcher = [*container, oumi, "distributed", "torchrun"]
        else:
            launcher = [
                *container,
                python,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "$SLURM_JOB_NUM_NODES",
                "--node_rank",
                "$SLURM_NODEID",
                "--nproc_per_node",
                str(per_node),
                "--master_addr",
                "$MASTER_ADDR",
                "--master_port",
                "$MASTER_PORT",
            ]
        inner = " ".join(a if a.startswith("$") else shlex.quote(a) for a in [*launcher, *workload])
        # One task per node; SLURM_NODEID is that node's rank. The inner shell expands it per node.
        lines.append(f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(inner)}")
    return "\n".join(lines) + "\n"
