"""SLURM output parsing, version-dependent flags and sbatch rendering, from recorded real command output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ai_how.config.models import SlurmConfig
from ai_how.executors.base import JobSpec
from ai_how.executors.slurm import SlurmClient
from ai_how.slurm.commands import (
    FAILURES,
    Features,
    SlurmVersion,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_job,
)
from ai_how.slurm.sbatch import job_paths, render
from ai_how.slurm.transport import Result

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_version_and_features() -> None:
    version = SlurmVersion.parse(fixture("sbatch_version_22.05.txt"))
    assert version == SlurmVersion(22, 5, 8)
    features = Features.of(version)
    assert features.squeue_json and not features.sacct_json and not features.only_job_state
    old = Features.of(SlurmVersion.parse("slurm 20.11.9"))
    assert not old.only_job_state and not old.squeue_json  # the flag that broke skypilot#8907
    new = Features.of(SlurmVersion.parse("slurm 24.11.0-1"))
    assert new.sacct_json and new.only_job_state
    with pytest.raises(ValueError):
        SlurmVersion.parse("sbatch: command not found")


@pytest.mark.parametrize(
    ("name", "state", "finished", "succeeded", "exit_code"),
    [
        ("scontrol_job_pending.txt", "PENDING", False, False, 0),
        ("scontrol_job_running.txt", "RUNNING", False, False, 0),
        ("scontrol_job_completed.txt", "COMPLETED", True, True, 0),
        ("scontrol_job_failed.txt", "FAILED", True, False, 3),
        ("scontrol_job_cancelled.txt", "CANCELLED", True, False, 0),
    ],
)
def test_scontrol_job_states(name: str, state: str, finished: bool, succeeded: bool, exit_code: int) -> None:
    info = parse_scontrol_job(fixture(name))
    assert (info.state, info.finished, info.succeeded, info.exit_code) == (
        state,
        finished,
        succeeded,
        exit_code,
    )
    assert info.job_id.isdigit()
    if state == "PENDING":
        assert info.reason == "Resources" and info.nodelist == ""
    if state == "COMPLETED":
        assert info.nodelist == "localhost"


@pytest.mark.parametrize("state", ["TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"])
def test_failure_states_have_actionable_words(state: str) -> None:
    line = fixture("scontrol_job_failed.txt").replace("JobState=FAILED", f"JobState={state}")
    info = parse_scontrol_job(line)
    assert info.finished and not info.succeeded and state in FAILURES


def test_sacct_and_sbatch_output() -> None:
    text = "7|FAILED|7:0|localhost\n7.batch|FAILED|7:0|localhost\n8|CANCELLED by 0|0:15|\n"
    assert parse_sacct(text, "7").state == "FAILED"  # type: ignore[union-attr]
    assert parse_sacct(text, "8").signal == 15  # type: ignore[union-attr]
    assert parse_sacct(text, "9") is None
    assert parse_sbatch_parsable("42\n") == "42" and parse_sbatch_parsable("42;cluster\n") == "42"
    with pytest.raises(ValueError):
        parse_sbatch_parsable("sbatch: error: Batch job submission failed")
    with pytest.raises(ValueError):
        parse_scontrol_job(fixture("scontrol_job_invalid.txt"))


class RecordedTransport:
    """Answers with recorded output; this is the narrow interface the executor talks through."""

    where = "recorded"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], timeout_s: float = 60) -> Result:
        self.calls.append(argv)
        return Result(0, self.answers[argv[0] + " " + argv[1]], "")

    def write_text(self, path: str, text: str) -> None:
        raise AssertionError

    def read_from(self, path: str, offset: int) -> bytes:
        return b""


def test_compressed_nodelists_expand_through_scontrol() -> None:
    transport = RecordedTransport(
        {
            "scontrol show": fixture("scontrol_hostnames_g100n.txt"),
            "sbatch --version": fixture("sbatch_version_22.05.txt"),
        }
    )
    client = SlurmClient(transport)
    assert client.hostnames("g100n[040-041],cpu[1,3-4]") == ["g100n040", "g100n041", "cpu1", "cpu3", "cpu4"]
    assert transport.calls[-1] == ["scontrol", "show", "hostnames", "g100n[040-041],cpu[1,3-4]"]
    assert client.features.version == SlurmVersion(22, 5, 8)
    assert client.features is client.features  # probed once
    assert sum(call[0] == "sbatch" for call in transport.calls) == 1


@pytest.mark.parametrize(("version", "flag"), [("slurm 22.05.8", False), ("slurm 23.02.7", True)])
def test_state_poll_uses_the_flags_of_the_version(version: str, flag: bool) -> None:
    transport = RecordedTransport(
        {"sbatch --version": version, "squeue -h": "RUNNING\n", "squeue --only-job-state": "RUNNING\n"}
    )
    client = SlurmClient(transport)
    assert client.state("12") == "RUNNING"
    squeue = next(call for call in transport.calls if call[0] == "squeue")
    assert ("--only-job-state" in squeue) is flag


def spec(**kwargs: object) -> JobSpec:
    return JobSpec(
        "run-1",
        kwargs.pop("workload", "digits-cnn"),
        ["--epochs", "3"],  # type: ignore[arg-type]
        Path("/mnt/beegfs/models/d/run-1"),
        Path("/tmp/x.log"),
        **kwargs,
    )  # type: ignore[arg-type]


FEATURES = Features.of(SlurmVersion(22, 5, 8))


def syntax_ok(script: str) -> None:
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_single_gpu_script() -> None:
    job = spec(gpus=1)
    script = render(
        job,
        SlurmConfig.model_validate({"partitions": [{"name": "gpu", "default": True}]}),
        FEATURES,
        job_paths("/mnt/beegfs", job),
    )
    syntax_ok(script)
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --output=/mnt/beegfs/jobs/digits-cnn-%j.out" in script
    assert "-m ai_how.workloads digits-cnn --output /mnt/beegfs/models/d/run-1 --epochs 3" in script
    assert "torch.distributed.run" not in script and "srun" not in script


def test_multi_node_multi_gpu_script() -> None:
    job = spec(gpus=4, nodes=2)
    script = render(job, SlurmConfig(), FEATURES, job_paths("/mnt/beegfs", job))
    syntax_ok(script)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:4" in script and "--partition" not in script
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in script
    srun = next(line for line in script.splitlines() if line.startswith("srun"))
    assert (
        "--nproc_per_node 4" in srun
        and "--node_rank $SLURM_NODEID" in srun
        and "--nnodes $SLURM_JOB_NUM_NODES" in srun
    )
    assert "$SLURM_PROCID" not in script  # the node rank is SLURM_NODEID (oumi-ai/oumi#2020)


def test_cpu_data_parallel_and_apptainer_and_oumi() -> None:
    job = spec(processes=2)
    config = SlurmConfig.model_validate(
        {"container_runtime": "apptainer", "container_image": "/mnt/beegfs/c/oumi.sif"}
    )
    script = render(job, config, FEATURES, job_paths("/mnt/beegfs", job))
    syntax_ok(script)
    assert "--nproc_per_node 2" in script and "#SBATCH --gres" not in script
    assert "apptainer exec --nv /mnt/beegfs/c/oumi.sif" in script
    llm = spec(workload="llm-sft", gpus=2)
    oumi_script = render(llm, SlurmConfig(), FEATURES, job_paths("/mnt/beegfs", llm))
    syntax_ok(oumi_script)
    assert "oumi distributed torchrun -m ai_how.workloads llm-sft" in oumi_script
