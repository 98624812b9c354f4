"""The SLURM executor against a real SLURM: GRES jobs, 2-process DDP, failures, cancellation, the pipeline."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ai_how.config.loader import load_config
from ai_how.errors import AiHowError
from ai_how.executors.base import JobFailedError, JobSpec
from ai_how.executors.slurm import SlurmExecutor
from tests.services import AI_HOW, S3Server, SSHServer, make_env


@pytest.fixture
def executor(tmp_path: Path, slurm: None) -> SlurmExecutor:
    env = make_env(tmp_path, slurm=True)
    return SlurmExecutor(load_config(env.config).config, tmp_path / "state")


def job(executor: SlurmExecutor, tmp_path: Path, *args: str, **resources: int) -> JobSpec:
    return JobSpec(
        "t-" + tmp_path.name[-12:],
        "digits-cnn",
        list(args),
        Path(executor.shared) / "models" / "t",
        tmp_path / "train.log",
        **resources,
    )


@pytest.mark.slow
def test_two_process_data_parallel_job_all_reduces_metrics(executor: SlurmExecutor, tmp_path: Path) -> None:
    spec = job(executor, tmp_path, "--epochs", "6", processes=2)
    result = executor.run(spec)
    assert result.job_id.isdigit()
    metrics = json.loads((spec.output_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # The reported accuracy is over the WHOLE held-out set (all-reduced), not rank 0's half of it.
    import torch

    from ai_how.workloads import cnn
    from ai_how.workloads.digits_cnn import load_data

    config = json.loads((spec.output_dir / "model" / "model_config.json").read_text())
    model = cnn.build(config)
    model.load_state_dict(torch.load(spec.output_dir / "model" / "model.pt", weights_only=True))
    model.eval()
    _, _, x_te, y_te, scale, _ = load_data(None)
    with torch.no_grad():
        logits = model((torch.from_numpy(x_te) / scale - config["mean"]) / config["std"])
    full = float((logits.argmax(1) == torch.from_numpy(y_te)).float().mean())
    assert metrics["accuracy"][-1] == pytest.approx(full, abs=1e-6)
    log = spec.log_path.read_text()
    assert "submitted SLURM job" in log and "job ran on localhost" in log.replace(
        f"job {result.job_id} ", "job "
    )


def test_failed_job_shows_the_cause_from_stderr(executor: SlurmExecutor, tmp_path: Path) -> None:
    with pytest.raises(JobFailedError) as info:
        executor.run(job(executor, tmp_path, "--mnist-dir", "/no/such/mnist"))
    assert "failed with exit code 2" in info.value.message
    assert "MNIST directory /no/such/mnist does not exist" in info.value.message


@pytest.mark.slow
def test_pipeline_on_slurm_gres_job_lands_a_registered_model(
    tmp_path: Path, slurm: None, s3_server: S3Server
) -> None:
    env = make_env(tmp_path, s3=s3_server, slurm=True)
    with env.stack():
        result = env.pipeline(
            "--workload",
            "digits-cnn",
            "--gpus",
            "1",
            "--model-name",
            "slurmdigits",
        )
        doc = env.run_doc(env.latest_run())
        assert doc["status"] == "succeeded", result.stdout
        train = doc["stages"]["train"]["outputs"]
        assert train["job_id"].isdigit() and Path(train["model_dir"]).is_relative_to(tmp_path / "beegfs")
        script = next((tmp_path / "beegfs" / "jobs").glob("*.sbatch")).read_text()
        assert "#SBATCH --gres=gpu:1" in script
        log = (env.state_dir / "runs" / doc["run_id"] / "logs" / "train.log").read_text()
        assert "GPUs 0" in log  # SLURM gave the job the (fake) GPU: CUDA_VISIBLE_DEVICES=0
        assert doc["stages"]["register"]["outputs"]["version"] == 1
        # A job that fails: the pipeline stops at train, exit 1, with the cause from the job's stderr.
        failed = env.pipeline(
            "--workload",
            "digits-cnn",
            "--model-name",
            "slurmdigits",
            "--set",
            "mnist_dir=/no/mnist",
            check=False,
        )
        assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
        assert "stage train failed: SLURM job" in failed.stderr
        assert "failed with exit code 2: MNIST directory /no/mnist does not exist" in failed.stderr
        assert env.run_doc(env.latest_run())["stages"]["register"]["status"] == "pending"


@pytest.mark.slow
def test_llm_sft_pipeline_trains_on_slurm(tmp_path: Path, slurm: None) -> None:
    env = make_env(tmp_path, slurm=True)
    with env.stack():
        env.pipeline("--workload", "llm-sft", "--model-name", "slurmchat")
        doc = env.run_doc(env.latest_run())
        assert doc["status"] == "succeeded"
        assert doc["stages"]["train"]["outputs"]["job_id"].isdigit()
        assert all(check["ok"] for check in doc["stages"]["verify"]["outputs"]["checks"])


@pytest.mark.slow
def test_interrupting_the_pipeline_cancels_the_job(tmp_path: Path, slurm: None) -> None:
    env = make_env(tmp_path, slurm=True)
    job_id = None
    proc: subprocess.Popen[str] | None = None
    try:
        with env.stack():
            proc = subprocess.Popen(
                [
                    AI_HOW,
                    "pipeline",
                    "run",
                    "-c",
                    str(env.config),
                    "--workload",
                    "digits-cnn",
                    "--set",
                    "epochs=100000",
                    "-v",
                ],
                env=env.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            deadline = time.monotonic() + 120
            job_id = None
            while time.monotonic() < deadline and job_id is None:
                logs = list((env.state_dir / "runs").glob("*/logs/train.log"))
                text = logs[0].read_text() if logs else ""
                if ": RUNNING" in text:
                    job_id = text.split("submitted SLURM job ")[1].split()[0]
                time.sleep(0.3)
            assert job_id is not None, "the job never started"
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 130, output
            state = subprocess.run(
                ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
            )
            assert "JobState=CANCELLED" in state.stdout
            assert "Traceback" not in output
            doc = env.run_doc(env.latest_run())
            assert doc["stages"]["train"]["status"] == "interrupted"
    finally:  # leave the cluster idle for the next test, whatever happened: cancel only our own job
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if job_id is not None:
            subprocess.run(["scancel", job_id], capture_output=True, check=False)


@pytest.mark.slow
def test_ssh_transport_to_a_login_node(tmp_path: Path, slurm: None, ssh_server: SSHServer) -> None:
    """The same job through `ssh user@host` (key auth) instead of local commands."""
    env = make_env(tmp_path, slurm=True)
    data = yaml.safe_load(env.config.read_text())
    data["clusters"]["hpc"]["slurm"] |= {"login": ssh_server.login, "ssh_options": ssh_server.options}
    env.config.write_text(yaml.safe_dump(data))
    executor = SlurmExecutor(load_config(env.config).config, tmp_path / "state")
    assert executor.client.transport.where == ssh_server.login.split(":")[0]
    spec = job(executor, tmp_path, "--epochs", "2")
    result = executor.run(spec)
    assert result.job_id.isdigit()
    assert (spec.output_dir / "model" / "model.pt").exists()
    assert "epoch 2/2" in spec.log_path.read_text()  # the job's output came back over SSH

    data["clusters"]["hpc"]["slurm"]["login"] = "root@127.0.0.1:9"
    env.config.write_text(yaml.safe_dump(data))
    unreachable = SlurmExecutor(load_config(env.config).config, tmp_path / "state")
    with pytest.raises(AiHowError, match=r"cannot reach the login node root@127\.0\.0\.1"):
        unreachable.run(job(unreachable, tmp_path, "--epochs", "1"))
