"""The main job end to end against real services: MLflow server, moto S3 (credentials checked), PostgreSQL.

Each pipeline runs through the real CLI in a subprocess, trains a real model and serves it.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_how.bench.payloads import ZERO
from tests.services import Env, Postgres, S3Server, free_port, make_env, write_config

# ZERO: a held-out sklearn digit (index 0 of the test split), a 0 (shared with the serving benchmark).


def run_pipeline(
    env: Env, *args: str, **kwargs: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = env.pipeline(*args, **kwargs)
    return result, env.run_doc(env.latest_run())


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port``, read from /proc/net/tcp (no traffic sent)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def mlflow_client(env: Env) -> Any:
    import yaml
    from mlflow.tracking import MlflowClient

    port = yaml.safe_load(env.config.read_text())["mlops"]["mlflow"]["port"]
    return MlflowClient(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}")


@pytest.mark.slow
def test_digits_cnn_trains_registers_syncs_serves_and_rolls_back(e2e: Env, s3_server: S3Server) -> None:
    result, doc = run_pipeline(e2e, "--workload", "digits-cnn", "--model-name", "digits")
    assert doc["status"] == "succeeded"
    for stage in ("train", "register", "sync", "deploy", "verify", "promote"):
        assert f"✓ {stage}" in result.stdout
    stages = {name: record["outputs"] for name, record in doc["stages"].items()}
    assert stages["train"]["metrics"]["accuracy"] > 0.9
    endpoint = stages["promote"]["endpoint"]
    assert endpoint != stages["deploy"]["endpoint"]  # verified as a candidate on its own port, then promoted
    assert listening_addresses(int(endpoint.rsplit(":", 1)[1])) == {"127.0.0.1"}  # not 0.0.0.0
    v1 = httpx.post(f"{endpoint}/v1/models/digits:predict", json={"instances": [ZERO]}).json()
    assert v1 == {"predictions": [0]}
    v2 = httpx.post(
        f"{endpoint}/v2/models/digits/infer",
        json={"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": ZERO}]},
    ).json()
    assert v2["outputs"][0]["data"] == [0]
    assert all(check["ok"] for check in stages["verify"]["checks"])
    assert "served version" in {check["name"] for check in stages["verify"]["checks"]}

    # Load: 300 requests from 8 workers, all answered correctly, every one counted by the server's metrics.
    from ai_how.bench.loadgen import send_requests

    def counted() -> float:
        from ai_how.pipeline.checks import metric_total

        text = httpx.get(f"{endpoint}/metrics").text
        return metric_total(
            text, "ai_how_requests_total", {"route": "/v1/models/{model_name}:predict", "code": "200"}
        )

    before = counted()
    result = send_requests(endpoint, "digits", "v1", total=300, concurrency=8)
    assert result["errors"] == 0 and result["ok"] == 300 and result["requests_per_s"] > 0
    assert counted() - before == 300

    # MLflow: one run with the whole metric history (batched), params, dataset hash and job id; v1 @production.
    client = mlflow_client(e2e)
    run = client.get_run(stages["train"]["mlflow_run_id"])
    assert len(client.get_metric_history(run.info.run_id, "accuracy")) == 12
    assert run.data.tags["ai_how.dataset_sha256"] == stages["train"]["dataset_sha256"]
    assert run.data.tags["ai_how.job_id"] == stages["train"]["job_id"]
    assert run.data.params["epochs"] == "12"
    assert client.get_model_version_by_alias("digits", "production").version == "1"

    # The KServe manifest for this version sits in the run directory.
    manifest = Path(stages["deploy"]["inferenceservice"]).read_text()
    assert (
        "storageUri: s3://models/digits/v1/" in manifest and "ai-how.io/mlflow-model-version: '1'" in manifest
    )

    # A second version takes @production; rollback moves it back to v1 and v1 serves again.
    _, doc2 = run_pipeline(e2e, "--workload", "digits-cnn", "--model-name", "digits", "--set", "epochs=6")
    assert doc2["stages"]["register"]["outputs"]["version"] == 2
    assert doc2["stages"]["promote"]["outputs"]["previous_production"] == 1
    assert httpx.get(f"{endpoint}/v2/models/digits").json()["versions"] == ["2"]
    rolled = json.loads(
        e2e.cli("pipeline", "rollback", "-c", str(e2e.config), "--model-name", "digits", "--json").stdout
    )
    assert (rolled["from"], rolled["to"]) == (2, 1)
    assert client.get_model_version_by_alias("digits", "production").version == "1"
    assert sorted(int(v.version) for v in client.search_model_versions("name='digits'")) == [1, 2]
    served = httpx.get(f"{endpoint}/v2/models/digits/ready")
    assert served.status_code == 200 and served.headers["x-ai-how-model-version"] == "1"
    verified = e2e.cli("pipeline", "verify", "-c", str(e2e.config), "--model-name", "digits")
    assert "v1: all checks passed" in verified.stdout


@pytest.mark.slow
def test_llm_sft_serves_openai_chat_and_oumi_remote_engine(e2e: Env) -> None:
    result, doc = run_pipeline(e2e, "--workload", "llm-sft", "--model-name", "chat")
    assert doc["status"] == "succeeded", result.stdout
    endpoint = doc["stages"]["deploy"]["outputs"]["endpoint"]
    chat = httpx.post(
        f"{endpoint}/openai/v1/chat/completions",
        timeout=60,
        json={"model": "chat", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6},
    )
    assert chat.status_code == 200
    body = chat.json()
    assert body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] <= 6
    # Oumi's REMOTE engine (it sends max_completion_tokens) works against the same endpoint.
    code = (
        "import sys\n"
        "from oumi.core.configs import GenerationParams, InferenceConfig, ModelParams, RemoteParams\n"
        "from oumi.core.types.conversation import Conversation, Message, Role\n"
        "from oumi.inference import RemoteInferenceEngine\n"
        "engine = RemoteInferenceEngine(model_params=ModelParams(model_name='chat'),\n"
        "    remote_params=RemoteParams(api_url=sys.argv[1] + '/openai/v1/chat/completions', max_retries=1))\n"
        "out = engine.infer([Conversation(messages=[Message(role=Role.USER, content='Hi there')])],\n"
        "    InferenceConfig(model=ModelParams(model_name='chat'),\n"
        "                    generation=GenerationParams(max_new_tokens=5, temperature=0.0)))\n"
        "assert out[0].messages[-1].role == Role.ASSISTANT, out\n"
        "print('OUMI-REMOTE-OK', repr(out[0].messages[-1].content))\n"
    )
    remote = subprocess.run(
        [sys.executable, "-c", code, endpoint],
        capture_output=True,
        text=True,
        timeout=300,
        env=e2e.env,
        check=False,
    )
    assert "OUMI-REMOTE-OK" in remote.stdout, remote.stderr[-3000:]
    # MLOPS-3.2: Oumi custom evaluation, offline (NATIVE) and through the deployed endpoint (REMOTE),
    # logged to the model version's MLflow run.
    for extra in ([], ["--remote"]):
        evaluated = json.loads(
            e2e.cli("evaluate", "-c", str(e2e.config), "--model-name", "chat", "--json", *extra).stdout
        )
        assert evaluated["engine"] == ("REMOTE" if extra else "NATIVE")
        assert 1.0 < evaluated["perplexity"]["perplexity"] < 2000 and evaluated["perplexity"]["examples"] > 0
        prompts = [g["prompt"] for g in evaluated["generation"]["generations"]]
        assert prompts == [
            "Write a short story about",
            "Explain quantum computing in simple terms",
            "Create a haiku about nature",
        ]
    run_id = doc["stages"]["train"]["outputs"]["mlflow_run_id"]
    assert "eval_perplexity" in mlflow_client(e2e).get_run(run_id).data.metrics
    # Oumi's TrainingConfig was saved with the model and is a real Oumi config.
    from oumi.core.configs import TrainingConfig

    model_dir = Path(doc["stages"]["train"]["outputs"]["model_dir"])
    config = TrainingConfig.from_yaml(str(model_dir / "oumi_train.yaml"))
    assert config.training.trainer_type.name == "TRL_SFT"


@pytest.mark.slow
def test_killed_during_sync_resumes_without_resending(e2e: Env, s3_server: S3Server) -> None:
    killed = e2e.pipeline(
        "--workload",
        "llm-sft",
        "--model-name",
        "crashy",
        check=False,
        extra_env={"AI_HOW_FAILPOINTS": "sync.file_done=3:kill"},
    )
    assert killed.returncode == -signal.SIGKILL
    run_id = e2e.latest_run()
    doc = e2e.run_doc(run_id)
    assert doc["stages"]["sync"]["status"] == "running"  # it died there
    verified_before = set(
        json.loads((e2e.state_dir / "runs" / run_id / "sync-state.json").read_text())["verified"]
    )
    assert len(verified_before) == 3

    e2e.cli("pipeline", "run", "--resume", run_id)
    doc = e2e.run_doc(run_id)
    assert doc["status"] == "succeeded"
    assert doc["stages"]["train"]["skipped"] and doc["stages"]["register"]["skipped"]
    sync = doc["stages"]["sync"]["outputs"]
    assert not verified_before & set(sync["uploaded"]), "a file verified before the crash was sent again"
    # Every object's sha256 equals the manifest's and the source file's; no duplicate model version.
    s3 = s3_server.client()
    manifest = json.loads(s3.get_object(Bucket="models", Key="crashy/v1/manifest.json")["Body"].read())
    model_dir = Path(doc["stages"]["train"]["outputs"]["model_dir"])
    for entry in manifest["files"]:
        body = s3.get_object(Bucket="models", Key=f"crashy/v1/{entry['path']}")["Body"].read()
        assert (
            hashlib.sha256(body).hexdigest()
            == entry["sha256"]
            == hashlib.sha256((model_dir / entry["path"]).read_bytes()).hexdigest()
        )
    assert [v.version for v in mlflow_client(e2e).search_model_versions("name='crashy'")] == ["1"]

    # Later bit rot in the store is caught by `pipeline verify` and by a server that loads the version.
    key = "crashy/v1/model.safetensors"
    head = s3.head_object(Bucket="models", Key=key)
    data = bytearray(s3.get_object(Bucket="models", Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, same recorded sha256 metadata
    s3.put_object(Bucket="models", Key=key, Body=bytes(data), Metadata=head["Metadata"])

    verify = e2e.cli("pipeline", "verify", "-c", str(e2e.config), "--model-name", "crashy", check=False)
    assert verify.returncode == 1
    assert "model.safetensors: sha256" in verify.stdout and "Traceback" not in verify.stdout + verify.stderr

    server = subprocess.run(
        [
            sys.executable,
            "-m",
            "ai_how.serving.server",
            "--model-uri",
            "s3://models/crashy/v1",
            "--name",
            "crashy",
            "--config",
            str(e2e.config),
            "--port",
            str(free_port()),
            "--cache-dir",
            str(e2e.state_dir / "corrupt-cache"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=e2e.env,
    )
    assert server.returncode == 3
    assert "model.safetensors" in server.stderr and "is corrupt" in server.stderr


@pytest.mark.slow
def test_a_failed_verify_leaves_production_on_the_old_version(e2e: Env, s3_server: S3Server) -> None:
    _, first = run_pipeline(e2e, "--workload", "digits-cnn", "--model-name", "guarded")
    assert first["status"] == "succeeded"
    production = first["stages"]["promote"]["outputs"]["endpoint"]
    e2e.pipeline("--workload", "digits-cnn", "--model-name", "guarded", "--stop-after", "deploy")
    run_id = e2e.latest_run()
    candidate = e2e.run_doc(run_id)["stages"]["deploy"]["outputs"]["endpoint"]
    assert httpx.get(f"{candidate}/v2/models/guarded").headers["x-ai-how-model-version"] == "2"
    assert httpx.get(f"{production}/v2/models/guarded").headers["x-ai-how-model-version"] == "1"

    # Bit rot in v2's weights after the candidate loaded them: verify's full read-back must refuse v2.
    s3 = s3_server.client()
    key = "guarded/v2/model.pt"
    head = s3.head_object(Bucket="models", Key=key)
    data = bytearray(s3.get_object(Bucket="models", Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket="models", Key=key, Body=bytes(data), Metadata=head["Metadata"])
    resumed = e2e.cli("pipeline", "run", "--resume", run_id, check=False)
    _fails_cleanly(resumed, "stage verify failed", "model.pt: sha256", "@production stays on v1")
    doc = e2e.run_doc(run_id)
    assert doc["stages"]["verify"]["status"] == "failed" and doc["stages"]["promote"]["status"] == "pending"
    client = mlflow_client(e2e)
    assert client.get_model_version_by_alias("guarded", "production").version == "1"
    assert client.get_model_version_by_alias("guarded", "candidate").version == "2"
    answer = httpx.post(f"{production}/v1/models/guarded:predict", json={"instances": [ZERO]})
    assert answer.json() == {"predictions": [0]} and answer.headers["x-ai-how-model-version"] == "1"


def _fails_cleanly(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in output, output


@pytest.mark.slow
def test_bad_inputs_end_with_the_cause_and_the_stage(e2e: Env, tmp_path: Path) -> None:
    _fails_cleanly(e2e.pipeline("--workload", "nope", check=False), "unknown workload 'nope'")
    _fails_cleanly(
        e2e.pipeline(
            "--workload",
            "llm-sft",
            "--set",
            "dataset=/no/such.jsonl",
            check=False,
        ),
        "stage train failed",
        "dataset /no/such.jsonl does not exist",
    )
    dead = write_config(
        tmp_path / "dead-mlflow.yaml",
        mlflow_port=free_port(),
        serving_port=free_port(),
        tracking_uri=f"http://127.0.0.1:{free_port()}",
    )
    _fails_cleanly(
        e2e.cli("pipeline", "run", "-c", str(dead), "--workload", "digits-cnn", check=False),
        "stage train failed",
        "cannot reach MLflow",
    )
    _fails_cleanly(
        e2e.pipeline(
            "--workload",
            "digits-cnn",
            "--model-name",
            "badcreds",
            "--set",
            "epochs=1",
            check=False,
            extra_env={"E2E_S3_SECRET": "wrong-secret"},
        ),
        "stage sync failed",
        "rejected the credentials",
        "E2E_S3_KEY and E2E_S3_SECRET",
        "--resume",
    )


@pytest.mark.slow
def test_pipeline_with_postgresql_backend(tmp_path: Path, postgres: Postgres, s3_server: S3Server) -> None:
    env = make_env(tmp_path, s3=s3_server, postgres=postgres)
    with env.stack():
        _, doc = run_pipeline(
            env, "--workload", "digits-cnn", "--model-name", "pgdigits", "--set", "epochs=8"
        )
        assert doc["status"] == "succeeded"
        rows = postgres.psql(
            "SELECT name, alias, version FROM registered_model_aliases", database=postgres.database
        ).split()
        assert "pgdigits|production|1" in rows


def test_stage_by_stage_with_stop_after_and_resume_latest(e2e: Env) -> None:
    first = e2e.pipeline(
        "--workload",
        "digits-cnn",
        "--model-name",
        "steps",
        "--set",
        "epochs=2",
        "--stop-after",
        "train",
    )
    assert "continue with: ai-how pipeline run --resume" in first.stdout
    run_id = e2e.latest_run()
    doc = e2e.run_doc(run_id)
    assert doc["status"] == "stopped" and doc["stages"]["register"]["status"] == "pending"
    e2e.cli("pipeline", "run", "--resume", "latest", "--stop-after", "register")
    doc = e2e.run_doc(run_id)
    assert doc["stages"]["train"]["skipped"] and doc["stages"]["register"]["status"] == "succeeded"
    assert doc["stages"]["sync"]["status"] == "pending"
    status = json.loads(e2e.cli("pipeline", "status", "latest", "--json").stdout)
    assert status["run_id"] == run_id


@pytest.mark.slow
def test_the_embedded_default_needs_no_separate_stack_up(tmp_path: Path) -> None:
    """`ai-how pipeline run` on a config whose MLflow runs here starts it when it is down."""
    env = make_env(tmp_path)
    try:
        _, doc = run_pipeline(env, "--workload", "digits-cnn", "--set", "epochs=10")
        assert doc["status"] == "succeeded"
        status = json.loads(env.cli("stack", "status", "-c", str(env.config), "--json").stdout)
        assert {s["name"]: s["healthy"] for s in status}["mlflow"] is True
    finally:
        env.cli("stack", "down", "-c", str(env.config), check=False)
