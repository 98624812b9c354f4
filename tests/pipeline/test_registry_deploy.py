"""``ai-how deploy MODEL[@ALIAS|/VERSION]`` against the real MLflow server, S3 endpoint and model server.

The versions here are registered the way other people's code registers them (``mlflow.transformers`` and
``mlflow.sklearn`` in a separate process), not by ai-how, so the bridge has to download, convert and sync.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.services import Env
from tests.serving.llm_fixtures import tiny_llama

LOG_TRANSFORMERS = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment("someone-else")
with mlflow.start_run():
    mlflow.transformers.log_model(sys.argv[2], name="model", task="text-generation",
                                  registered_model_name=sys.argv[3], pip_requirements=["transformers", "torch"])
"""

LOG_SKLEARN = """
import sys, mlflow
from sklearn.linear_model import LogisticRegression
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment("someone-else")
with mlflow.start_run():
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    mlflow.sklearn.log_model(model, name="model", registered_model_name=sys.argv[2], pip_requirements=["scikit-learn"])
"""


def tracking_uri(env: Env) -> str:
    return f"http://127.0.0.1:{yaml.safe_load(env.config.read_text())['mlops']['mlflow']['port']}"


def log(env: Env, code: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code, tracking_uri(env), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env.env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_someone_elses_transformers_llm_is_synced_and_served(e2e: Env, tmp_path: Path) -> None:
    log(e2e, LOG_TRANSFORMERS, str(tiny_llama(tmp_path)), "someone-llm")

    first = json.loads(e2e.cli("deploy", "someone-llm/1", "-c", str(e2e.config), "--json").stdout)
    assert (first["model"], first["version"], first["kind"], first["synced_now"]) == (
        "someone-llm",
        1,
        "llm",
        True,
    )
    assert first["storage_uri"].startswith("s3://models/someone-llm/v1")
    assert all(check["ok"] for check in first["checks"])
    endpoint = first["endpoint"]
    metadata = httpx.get(f"{endpoint}/v2/models/someone-llm", timeout=30)
    assert metadata.json()["versions"] == ["1"]
    completion = httpx.post(
        f"{endpoint}/openai/v1/completions",
        json={"model": "someone-llm", "prompt": "hello number", "max_tokens": 4},
        timeout=60,
    )
    assert completion.status_code == 200 and completion.json()["usage"]["completion_tokens"] <= 4

    # The registry now says where the version lives; deploying it again sends nothing.
    again = json.loads(e2e.cli("deploy", "someone-llm", "-c", str(e2e.config), "--json").stdout)
    assert (again["version"], again["synced_now"], again["endpoint"]) == (1, False, endpoint)


def test_what_cannot_be_served_is_refused_in_one_line(e2e: Env) -> None:
    log(e2e, LOG_SKLEARN, "someone-sklearn")
    refused = e2e.cli("deploy", "someone-sklearn@champion", "-c", str(e2e.config), check=False)
    assert refused.returncode != 0 and "has no alias @champion" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = e2e.cli("deploy", "someone-sklearn/1", "-c", str(e2e.config), check=False)
    assert refused.returncode != 0
    assert "cannot serve this version (flavors: python_function, sklearn)" in refused.stderr
    assert "mlflow models serve" in refused.stderr
    missing = e2e.cli("deploy", "no-such-model", "-c", str(e2e.config), check=False)
    assert "the registry has no model 'no-such-model'" in missing.stderr
    bad = e2e.cli("deploy", "bad ref!", "-c", str(e2e.config), check=False)
    assert "does not name a registry version" in bad.stderr
