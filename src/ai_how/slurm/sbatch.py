"""sbatch scripts a SLURM admin would write, rendered from the config and a job spec.

- one process: the workload runs directly in the batch step;
- several processes (GPUs from GRES, or CPU processes) on 1..N nodes: one ``srun`` task per node
  starts ``torchrun`` with ``--nproc_per_node`` = GPUs per node, ``MASTER_ADDR`` = the first host of
  the allocation (expanded with ``scontrol show hostnames``) and ``--node_rank`` = ``SLURM_NODEID``;
- llm-sft on several GPUs goes through ``oumi distributed torchrun`` (Oumi reads the same SLURM variables);
- with ``container_runtime: apptainer`` every command runs in ``apptainer exec --nv IMAGE``.

Every value that reaches a shell is quoted with ``shlex.quote``; environment names and ``#SBATCH``
values are checked first, so a job name, partition, time or path can never add a line to the script.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ai_how.config.models import SlurmConfig
from ai_how.errors import AiHowError
from ai_how.executors.base import JobSpec
from ai_how.slurm.commands import Features

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JOB_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,199}")  # no slash, blank or leading "-"
_PARTITION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TIME = re.compile(r"(?:(\d+)-)?(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?|INFINITE")
_MEM = re.compile(r"\d+[KMGT]?")
# #SBATCH lines are parsed by sbatch, not bash: a path there may not hold blanks, quotes or escapes.
_SBATCH_PATH = re.compile(r"[^\s'\"\\%]+")

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


def _refuse(field: str, value: object, why: str, fix: str) -> AiHowError:
    return AiHowError(f"{field} {value!r} {why}", fix=fix)


def _check_name(field: str, value: str) -> str:
    if not _JOB_NAME.fullmatch(value):
        raise _refuse(field, value, "is not a valid SLURM job name", "use letters, digits, '.', '_' and '-'")
    return value


def _check_sbatch_path(field: str, value: str) -> str:
    if not _SBATCH_PATH.fullmatch(value):
        raise _refuse(
            field,
            value,
            "cannot go on an #SBATCH line",
            "use a path without spaces, quotes, backslashes or '%'",
        )
    return value


def job_paths(shared_root: str, spec: JobSpec) -> JobPaths:
    """The seed's BeeGFS layout: scripts and logs under jobs/, models under models/."""
    _check_sbatch_path("clusters.hpc.storage.mount_point", shared_root)
    _check_name("job name", spec.name)
    _check_name("workload", spec.workload)
    jobs = f"{shared_root.rstrip('/')}/jobs"
    out = f"{jobs}/{spec.workload}-%j.out"
    # A user's script job (Oumi) gets one log, so `oumi launch logs` shows its errors too.
    err = out if spec.script is not None else f"{jobs}/{spec.workload}-%j.err"
    return JobPaths(f"{jobs}/{spec.name}.sbatch", out, err)


def _partition(slurm: SlurmConfig) -> str | None:
    return next((p.name for p in slurm.partitions if p.default), None)


def _check_time(value: str) -> str:
    match = _TIME.fullmatch(value)
    if match is None or any(int(part) >= 60 for part in match.groups()[2:] if part is not None):
        raise _refuse(
            "clusters.hpc.slurm.time",
            value,
            "is not a SLURM time limit",
            "write HH:MM:SS or D-HH:MM:SS (e.g. 01:30:00 or 2-00:00:00), or INFINITE",
        )
    return value


def _check_count(field: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _refuse(
            field, value, f"is not a whole number >= {minimum}", f"set {field} to {minimum} or more"
        )
    return value


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise _refuse(
                "job environment variable",
                key,
                "is not a valid name",
                "use letters, digits and '_', not starting with a digit",
            )
    return env


def _check_no_nul(field: str, values: Iterable[str]) -> None:
    for value in values:
        if "\0" in value:
            raise _refuse(field, value, "contains a NUL byte, which no shell can pass", "remove it")


def _validate(spec: JobSpec, slurm: SlurmConfig, paths: JobPaths) -> None:
    """Refuse anything that could break out of its place in the script, in one line naming the field."""
    _check_name("workload", spec.workload)
    for field, path in (("job output", paths.stdout), ("job error log", paths.stderr)):
        _check_sbatch_path(field, path.replace("%j", ""))  # %j (the job id) is ours
    if (partition := _partition(slurm)) is not None and not _PARTITION.fullmatch(partition):
        raise _refuse(
            "clusters.hpc.slurm.partitions.name", partition, "is not a partition name", "use [A-Za-z0-9_-]"
        )
    if not _MEM.fullmatch(slurm.mem):
        raise _refuse(
            "clusters.hpc.slurm.mem", slurm.mem, "is not a SLURM memory size", "write e.g. 16G or 512M"
        )
    _check_time(slurm.time)
    _check_count("gpus", spec.gpus, 0)
    _check_count("processes", spec.processes, 1)
    _check_count("nodes", spec.nodes, 1)
    _check_count("clusters.hpc.slurm.cpus_per_task", slurm.cpus_per_task, 1)
    _check_env(spec.env)
    _check_no_nul("job argument", [*spec.args, str(spec.output_dir), *spec.env.values()])
    if slurm.container_image is not None and slurm.container_image.startswith("-"):
        raise _refuse(
            "clusters.hpc.slurm.container_image", slurm.container_image, "starts with '-'", "give a path"
        )


class _Var(str):
    """A shell variable the inner per-node shell expands (``$SLURM_NODEID``); the only unquoted word."""


def _shell_words(words: Iterable[str]) -> str:
    return " ".join(f"${word}" if isinstance(word, _Var) else shlex.quote(word) for word in words)


def render(spec: JobSpec, slurm: SlurmConfig, features: Features, paths: JobPaths) -> str:
    """The sbatch script for ``spec``; refuses (AiHowError) values that could inject into it."""
    _validate(spec, slurm, paths)
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
                _Var("SLURM_JOB_NUM_NODES"),
                "--node_rank",
                _Var("SLURM_NODEID"),
                "--nproc_per_node",
                str(per_node),
                "--master_addr",
                _Var("MASTER_ADDR"),
                "--master_port",
                _Var("MASTER_PORT"),
            ]
        # Only the _Var words stay unquoted: a workload argument such as '$(reboot)' is passed literally.
        inner = _shell_words([*launcher, *workload])
        # One task per node; SLURM_NODEID is that node's rank. The inner shell expands it per node.
        lines.append(f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(inner)}")
    return "\n".join(lines) + "\n"
