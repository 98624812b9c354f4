"""MLflow's fail-fast HTTP settings are applied when a Tracker is created, never on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ai_how.tracking import FAIL_FAST_HTTP

PROBE = """
import json, os, sys
keys = {keys!r}
import ai_how.tracking as tracking
after_import = {{k: os.environ.get(k) for k in keys}}
tracking.Tracker("sqlite:///" + sys.argv[1], "probe")
print(json.dumps([after_import, {{k: os.environ.get(k) for k in keys}}]))
"""


def test_settings_are_applied_by_the_tracker_and_the_users_values_win(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "7"  # set by the user
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(keys=sorted(FAIL_FAST_HTTP)), str(tmp_path / "mlflow.db")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    after_import, after_tracker = json.loads(result.stdout.splitlines()[-1])
    assert after_import == {
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": None,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "7",
    }
    assert after_tracker == {
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "7",
    }
