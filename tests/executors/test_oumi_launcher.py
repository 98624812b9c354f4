"""`oumi launch` with `resources.cloud: ai-how` on the real SLURM: up, status, logs, cancel."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.services import AI_HOW, make_env

OUMI = str(Path(sys.executable).parent / "oumi")


def oumi_env(env_sh: Path, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for line in env_sh.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


@pytest.mark.slow
def test_oumi_launch_runs_on_the_ai_how_cluster(tmp_path: Path, slurm: None) -> None:
    env = make_env(tmp_path, slurm=True)
    out = tmp_path / "oumi"
    written = subprocess.run(
        [AI_HOW, "oumi", "config", "-c", str(env.config), "-o", str(out), "--max-steps", "4"],
        capture_output=True,
        text=True,
        env=env.env,
        check=True,
    )
    assert "oumi launch up -c" in written.stdout
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["resources"]["cloud"] == "ai-how"
    run_env = oumi_env(out / "env.sh", env.env)

    which = subprocess.run([OUMI, "launch", "which"], capture_output=True, text=True, env=run_env, check=True)
    assert "ai-how" in which.stdout
    up = subprocess.run(
        [OUMI, "launch", "up", "-c", str(out / "job.yaml"), "--cluster", "workstation"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=400,
        check=False,
    )
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert "finished with status COMPLETED" in up.stdout
    assert "ai-how job" in up.stdout  # the job's log was streamed through get_logs_stream
    (job_log,) = (tmp_path / "beegfs" / "jobs").glob("*-sft-*.out")
    assert "Training is Complete" in job_log.read_text()  # Oumi's own log (stderr) is in the same file
    assert (tmp_path / "beegfs" / "models" / "oumi-launch" / "output" / "model.safetensors").exists()
    status = subprocess.run(
        [OUMI, "launch", "status", "--cloud", "ai-how"],
        capture_output=True,
        text=True,
        env=run_env,
        check=True,
    )
    assert "COMPLETED" in status.stdout and "workstation" in status.stdout

    # A long job can be cancelled through Oumi.
    sleeper = dict(job, name="sleeper", run="echo started; sleep 300")
    (out / "sleep.yaml").write_text(yaml.safe_dump(sleeper))
    detached = subprocess.run(
        [OUMI, "launch", "up", "-c", str(out / "sleep.yaml"), "--cluster", "workstation", "--detach"],
        capture_output=True,
        text=True,
        env=run_env,
        check=True,
    )
    job_id = detached.stdout.split("Job ")[1].split()[0]
    try:
        deadline = time.monotonic() + 60
        while (
            "RUNNING"
            not in subprocess.run(
                ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=False
            ).stdout
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        subprocess.run(
            [OUMI, "launch", "cancel", "--cloud", "ai-how", "--cluster", "workstation", "--id", job_id],
            capture_output=True,
            text=True,
            env=run_env,
            check=True,
        )
        state = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
        )
        assert "JobState=CANCELLED" in state.stdout
    finally:  # cancel only the job this test submitted, whatever happened
        subprocess.run(["scancel", job_id], capture_output=True, check=False)


def test_oumi_config_needs_a_slurm_scheduler(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    result = subprocess.run(
        [AI_HOW, "oumi", "config", "-c", str(env.config), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env.env,
        check=False,
    )
    assert result.returncode == 1 and "scheduler is not slurm" in result.stderr
