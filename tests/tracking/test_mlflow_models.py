"""Registered versions are real MLflow Models: `models:/NAME@production` loads and serves, offline.

A real MLflow server (`ai-how stack up`, SQLite, proxied artifacts) holds the models; the digits
CNN and a tiny Llama are trained for real, logged through `Tracker.log_model` and registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ai_how.mlflow_models import MANIFEST_NAME, verify_manifest
from ai_how.objectstore.manifest import Manifest
from ai_how.tracking import PRODUCTION, Tracker, TrackingError
from tests.services import BIN, free_port, make_env

pytestmark = pytest.mark.slow

DIGITS, LLM = "digits-cnn", "llm-sft"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server started by `ai-how stack up` for this module."""
    env = make_env(tmp_path_factory.mktemp("mlflow-models"))
    port = yaml.safe_load(env.config.read_text())["mlops"]["mlflow"]["port"]
    with env.stack():
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow's own `models:/` resolution at the test server (per test, no global state)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return tracking_uri


def train(tmp: Path, workload: str, *args: str) -> Path:
    """Run a workload as the pipeline does (`python -m ai_how.workloads`); returns its model directory."""
    out = tmp / workload
    subprocess.run(
        [sys.executable, "-m", "ai_how.workloads", workload, "--output", str(out), *args],
        check=True,
        capture_output=True,
        timeout=300,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    return out / "model"


def register(tracker: Tracker, name: str, model_dir: Path, kind: str) -> tuple[str, str]:
    """What register and promote do: log the model, create the version, point @production at it."""
    run_id = tracker.start_run(f"{name}-{time.time_ns()}", name, {})
    source = tracker.log_model(run_id, model_dir, kind)
    ref = tracker.register(name, run_id, source, {"ai_how.kind": kind}, description="test")
    tracker.set_alias(name, ref.version, PRODUCTION)
    return run_id, source


@pytest.fixture(scope="module")
def digits(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(model dir, MLflow run id, logged source) of a 1-epoch digits CNN registered as digits-cnn@production."""
    model_dir = train(tmp_path_factory.mktemp("digits"), DIGITS, "--epochs", "1")
    run_id, source = register(Tracker(tracking_uri, "mlflow-models"), DIGITS, model_dir, "classifier")
    return model_dir, run_id, source


@pytest.fixture(scope="module")
def llm(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama fine-tuned for 2 steps, registered as llm-sft@production."""
    model_dir = train(tmp_path_factory.mktemp("llm"), LLM, "--max-steps", "2", "--limit", "20")
    register(Tracker(tracking_uri, "mlflow-models"), LLM, model_dir, "llm")
    return model_dir


def held_out_pixels(rows: int = 40) -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().data[::5][:rows], dtype=np.float32)  # the workload's held-out split


def test_digits_production_model_predicts_what_the_server_predicts(
    digits: tuple[Path, str, str], mlflow_env: str
) -> None:
    import mlflow.pyfunc
    import pandas as pd

    from ai_how.serving.classifier import ClassifierModel

    model = mlflow.pyfunc.load_model(f"models:/{DIGITS}@{PRODUCTION}")
    pixels = held_out_pixels()
    out = model.predict(pixels)
    server = ClassifierModel(DIGITS, digits[0])
    server.load()
    assert (
        out["prediction"].tolist()
        == asyncio.run(server.predict({"instances": pixels.tolist()}))["predictions"]
    )
    assert set(out["prediction"]) <= set(range(10))
    probabilities = np.stack(out["probabilities"].to_list())
    assert probabilities.shape == (len(pixels), 10)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    # A DataFrame of raw pixels (what `dataframe_split` requests become) gives the same answer.
    assert model.predict(pd.DataFrame(pixels))["prediction"].tolist() == out["prediction"].tolist()
    # The signature tells a client what to send: float32 rows of 64 raw pixels.
    spec = model.metadata.signature.inputs.inputs[0]
    assert (spec.type, spec.shape) == (np.dtype("float32"), (-1, 64))
    assert model.metadata.get_input_schema() is not None and model.input_example is not None
    with pytest.raises(Exception, match="64"):
        model.predict(np.zeros((2, 10), np.float32))


def test_logged_model_keeps_the_trained_files_and_their_manifest(
    digits: tuple[Path, str, str], mlflow_env: str, tmp_path: Path
) -> None:
    import mlflow.artifacts

    model_dir, _, _ = digits
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{DIGITS}@{PRODUCTION}", dst_path=str(tmp_path))
    )
    manifest = Manifest.from_bytes((local / MANIFEST_NAME).read_bytes(), "test")
    assert manifest.meta == {"kind": "classifier", "model_sha256": Manifest.of_directory(model_dir).digest}
    assert {"MLmodel", "data/model/model.pt", "data/model/model_config.json"} <= set(manifest.files)
    assert verify_manifest(local) == []
    assert (local / "data/model/model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()
    (local / "data/model/model.pt").write_bytes(b"corrupt")
    assert verify_manifest(local) == ["data/model/model.pt: sha256 differs"]


def test_logging_the_same_model_again_reuses_the_logged_model_and_version(
    digits: tuple[Path, str, str], tracking_uri: str
) -> None:
    model_dir, run_id, source = digits
    tracker = Tracker(tracking_uri, "mlflow-models")
    assert tracker.log_model(run_id, model_dir, "classifier") == source
    versions = tracker.versions(DIGITS)
    ref = tracker.register(DIGITS, run_id, source, {}, description="retry")
    assert tracker.versions(DIGITS) == versions and ref.version == tracker.alias_version(DIGITS)
    logged = tracker.client.get_logged_model(source.removeprefix("models:/"))
    assert (logged.source_run_id, logged.status) == (run_id, "READY")


def test_bad_kind_or_missing_directory_is_one_clear_error(
    digits: tuple[Path, str, str], tracking_uri: str
) -> None:
    model_dir, run_id, _ = digits
    tracker = Tracker(tracking_uri, "mlflow-models")
    with pytest.raises(TrackingError, match="unknown model kind 'regressor'") as bad_kind:
        tracker.log_model(run_id, model_dir, "regressor")
    assert bad_kind.value.fix is not None and "classifier" in bad_kind.value.fix
    with pytest.raises(TrackingError, match="does not exist"):
        tracker.log_model(run_id, model_dir.parent / "nope", "classifier")


def test_llm_production_model_generates_text_offline(llm: Path, mlflow_env: str, tmp_path: Path) -> None:
    import mlflow.artifacts
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{LLM}@{PRODUCTION}")
    assert "transformers" in model.metadata.flavors  # a real transformers model, tokenizer included
    assert model.metadata.flavors["transformers"]["components"] == ["tokenizer"]
    texts = model.predict(["Hello, how are you?", "Good morning"], params={"max_new_tokens": 4})
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{LLM}@{PRODUCTION}", dst_path=str(tmp_path)))
    assert verify_manifest(local) == []
    # The weights are the trained bytes, not a re-save.
    assert (local / "model" / "model.safetensors").read_bytes() == (llm / "model.safetensors").read_bytes()


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_ping(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(
        f"mlflow models serve did not answer /ping in {timeout_s} s:\n{log.read_text()[-3000:]}"
    )


def test_mlflow_models_serve_answers_predict_requests(
    digits: tuple[Path, str, str], tracking_uri: str, tmp_path: Path
) -> None:
    from ai_how.serving.classifier import ClassifierModel

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                *("models", "serve", "-m", f"models:/{DIGITS}@{PRODUCTION}", "--env-manager", "local"),
                *("-p", str(port), "-h", "127.0.0.1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            # `mlflow models serve` runs `uvicorn` from PATH: the one beside this Python.
            env=os.environ | {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}:{os.environ['PATH']}"},
            start_new_session=True,  # its uvicorn child is stopped with it
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ping(proc, f"{base}/ping", log)
        pixels = held_out_pixels(3)
        server = ClassifierModel(DIGITS, digits[0])
        server.load()
        expected = asyncio.run(server.predict({"instances": pixels.tolist()}))["predictions"]
        tensor = _post(f"{base}/invocations", {"inputs": pixels.tolist()})["predictions"]
        assert [row["prediction"] for row in tensor] == expected
        assert all(len(row["probabilities"]) == 10 for row in tensor)
        frame = _post(f"{base}/invocations", {"dataframe_split": {"data": pixels.tolist()}})["predictions"]
        assert [row["prediction"] for row in frame] == expected
        with pytest.raises(urllib.error.HTTPError) as bad:
            _post(f"{base}/invocations", {"inputs": [[1.0, 2.0]]})
        assert bad.value.code == 400
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process this test started and its children (its own session), nothing else."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
