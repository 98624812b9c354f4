"""sbatch scripts carry hostile values literally: quoted for bash, validated for #SBATCH lines.

Each rendered script is run by real bash with stand-ins for srun/scontrol/apptainer and a "python"
that records the argv, environment and directory it got: the values must arrive byte for byte and
no embedded command may run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.models import SlurmConfig
from ai_how.errors import AiHowError
from ai_how.executors.base import JobSpec
from ai_how.slurm.commands import Features, SlurmVersion
from ai_how.slurm.sbatch import JobPaths, job_paths, render

FEATURES = Features.of(SlurmVersion(22, 5, 8))

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECORD_TO"], "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "evil": os.environ.get("EVIL"), "cwd": os.getcwd()}}) + "\\n")
"""
STUBS = {
    # srun: drop its own options, run the command once as node 0.
    "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nSLURM_NODEID=0 exec "$@"\n',
    "scontrol": "#!/bin/bash\necho localhost\n",
    # apptainer exec --nv IMAGE CMD...: record the image, run CMD.
    "apptainer": '#!/bin/bash\nprintf %s "$3" > "$RECORD_TO.image"\nshift 3\nexec "$@"\n',
}


def hostile(tmp_path: Path) -> list[str]:
    """Workload arguments that would run a command if any of them reached the shell unquoted."""
    pwned = tmp_path / "pwned"
    return [
        f"'; touch {pwned}-1 #",
        f"$(touch {pwned}-2)",
        f"`touch {pwned}-3`",
        f'"; touch {pwned}-4; echo "',
        f"a b\nc; touch {pwned}-5",
        "$SLURM_JOB_ID",
        "*",
        "--set=x y",
    ]


def make_job(tmp_path: Path, **kwargs: Any) -> tuple[JobSpec, SlurmConfig, JobPaths, Path]:
    odd = tmp_path / "dir with spaces 'and' \"quotes\" $HOME"
    (odd / "bin").mkdir(parents=True)
    (odd / "work").mkdir()
    python = odd / "bin" / "py'thon"
    python.write_text(RECORDER.format(python=sys.executable))
    python.chmod(0o755)
    record = odd / "record.jsonl"
    slurm = SlurmConfig.model_validate(
        {"python": str(python), "container_image": str(odd / "image's.sif")} | kwargs.pop("slurm", {})
    )
    spec = JobSpec(
        "run-1",
        kwargs.pop("workload", "digits-cnn"),
        hostile(tmp_path),
        odd / "models" / "out put",
        tmp_path / "stage.log",
        env={"EVIL": f"$(touch {tmp_path / 'pwned'}-env) ' \"", "RECORD_TO": str(record)},
        workdir=str(odd / "work"),
        **kwargs,
    )
    shared = tmp_path / "beegfs"
    return spec, slurm, job_paths(str(shared), spec), record


def run_script(script: str, tmp_path: Path) -> None:
    """Run the script as a batch step would (bash, SLURM's variables), with the stand-ins on PATH."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    env = os.environ | {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
    }
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    done = subprocess.run(["bash", "-s"], input=script, text=True, env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("resources", "apptainer"),
    [
        ({}, False),
        ({"processes": 2}, False),
        ({"gpus": 2, "nodes": 2}, False),
        ({}, True),
        ({"processes": 2}, True),
    ],
    ids=["single", "torchrun", "multi-node", "apptainer", "apptainer-torchrun"],
)
def test_hostile_values_reach_the_workload_literally(
    tmp_path: Path, resources: dict[str, int], apptainer: bool
) -> None:
    slurm = {"container_runtime": "apptainer"} if apptainer else {"container_runtime": "none"}
    spec, config, paths, record = make_job(tmp_path, slurm=slurm, **resources)
    run_script(render(spec, config, FEATURES, paths), tmp_path)

    (seen,) = [json.loads(line) for line in record.read_text().splitlines()]
    workload = ["-m", "ai_how.workloads", "digits-cnn", "--output", str(spec.output_dir), *spec.args]
    assert seen["argv"][-len(workload) :] == workload
    assert seen["evil"] == spec.env["EVIL"]
    assert seen["cwd"] == spec.workdir
    if len(seen["argv"]) > len(workload):  # torchrun: the per-node variables were expanded by the shell
        launcher = seen["argv"][: -len(workload)]
        assert launcher[launcher.index("--node_rank") + 1] == "0"
        assert launcher[launcher.index("--nnodes") + 1] == "1"
        assert launcher[launcher.index("--master_addr") + 1] == "localhost"
    if apptainer:
        assert Path(f"{record}.image").read_text() == config.container_image
    assert not list(tmp_path.glob("pwned*")), "a value was executed by the shell"


def test_a_dollar_argument_is_not_a_shell_variable_in_the_torchrun_line(tmp_path: Path) -> None:
    """The per-node shell expands only ai-how's own variables, never a user's '$(...)' or '$VAR'."""
    spec, config, paths, _ = make_job(tmp_path, processes=2)
    srun = next(
        line for line in render(spec, config, FEATURES, paths).splitlines() if line.startswith("srun")
    )
    assert "--node_rank $SLURM_NODEID" in srun
    assert " $(touch" not in srun and " $SLURM_JOB_ID" not in srun


def _refused(tmp_path: Path, match: str, **changes: Any) -> str:
    spec, config, paths, _ = make_job(tmp_path)
    config = config.model_copy(update=changes.pop("slurm", {}))
    for key, value in changes.items():
        setattr(spec, key, value)
    with pytest.raises(AiHowError, match=match) as info:
        render(spec, config, FEATURES, job_paths(str(tmp_path / "beegfs"), spec) if changes else paths)
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message
    return message


@pytest.mark.parametrize("key", ["BAD-KEY", "1ABC", "A B", "X;touch /tmp/p", "", "A\nB"])
def test_bad_environment_names_are_refused(tmp_path: Path, key: str) -> None:
    _refused(tmp_path, "job environment variable .* is not a valid name", env={key: "v"})


@pytest.mark.parametrize(
    ("slurm", "field"),
    [
        ({"time": "01:00:00\n#SBATCH --uid=0"}, "clusters.hpc.slurm.time"),
        ({"time": "01:75:00"}, "clusters.hpc.slurm.time"),
        ({"time": "1 day"}, "clusters.hpc.slurm.time"),
        ({"mem": "16G --uid=0"}, "clusters.hpc.slurm.mem"),
        ({"mem": "lots"}, "clusters.hpc.slurm.mem"),
        ({"cpus_per_task": 0}, "clusters.hpc.slurm.cpus_per_task"),
        ({"container_image": "--bind=/:/host"}, "clusters.hpc.slurm.container_image"),
    ],
)
def test_bad_sbatch_values_are_refused(tmp_path: Path, slurm: dict[str, Any], field: str) -> None:
    """Even when a value got past the config schema (model_copy skips validation), render refuses it."""
    assert _refused(tmp_path, field, slurm=slurm).startswith(field)


def test_bad_partition_is_refused(tmp_path: Path) -> None:
    spec, config, paths, _ = make_job(tmp_path)
    partition = config.model_validate({"partitions": [{"name": "gpu", "default": True}]}).partitions[0]
    bad = config.model_copy(
        update={"partitions": [partition.model_copy(update={"name": "gpu\n#SBATCH -A x"})]}
    )
    with pytest.raises(AiHowError, match=r"partitions\.name"):
        render(spec, bad, FEATURES, paths)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("gpus", -1, "gpus"),
        ("nodes", 0, "nodes"),
        ("processes", True, "processes"),
        ("workload", "digits cnn", "workload"),
        ("name", "../../etc/cron.d/x", "job name"),
        ("args", ["ok", "nul\0byte"], "NUL byte"),
    ],
)
def test_bad_job_values_are_refused(tmp_path: Path, field: str, value: Any, match: str) -> None:
    _refused(tmp_path, match, **{field: value})


@pytest.mark.parametrize("root", ["/mnt/bee gfs", "/mnt/bee'gfs", "/mnt/beegfs%u", "/mnt/x\n#SBATCH --uid=0"])
def test_shared_roots_that_cannot_go_on_an_sbatch_line_are_refused(tmp_path: Path, root: str) -> None:
    spec, *_ = make_job(tmp_path)
    with pytest.raises(
        AiHowError, match=r"clusters\.hpc\.storage\.mount_point .* cannot go on an #SBATCH line"
    ):
        job_paths(root, spec)


def test_config_schema_already_refuses_a_newline_in_time() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SlurmConfig.model_validate({"time": "01:00:00\n#SBATCH --uid=0"})
