"""``ai-how status`` on a config whose services are not running: every area answers, failures are rows.

The healthy path with everything running (Prometheus targets, alerts, SLURM, model servers) is covered end to
end in test_embedded_stack.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ai_how.procs import free_port
from ai_how.state.store import StateStore
from tests.services import AI_HOW


def run_doc(
    run_id: str, model: str, status: str, created: str, failed_stage: str | None = None
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "workload": "digits-cnn",
        "model_name": model,
        "status": status,
        "created": created,
        "failed_stage": failed_stage,
        "stages": {},
    }


def status(state: Path, config: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [AI_HOW, "--state-dir", str(state), "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_only_a_models_latest_failed_run_and_down_services_fail_the_status(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]
) -> None:
    state = tmp_path / "state"
    store = StateStore(state)
    store.write("runs/r1", run_doc("r1", "digits", "failed", "2026-12-07T09:00:00", "train"))
    store.write("runs/r2", run_doc("r2", "digits", "succeeded", "2026-12-07T09:10:00"))
    store.write("runs/r3", run_doc("r3", "chat", "failed", "2026-12-07T09:20:00", "verify"))
    config = write_config(
        {
            "metadata": {"name": "x"},
            "mlops": {"mlflow": {"port": free_port()}, "serving": {"backend": "local", "port": free_port()}},
            "monitoring": {"prometheus": {"enabled": False}},
        }
    )
    code, report = status(state, config)
    rows = {c["name"]: c for c in report["components"]}
    assert code == 1 and report["healthy"] is False
    assert rows["run r1"]["state"] == "ok"  # a later run of the same model succeeded
    assert rows["run r2"]["state"] == "ok"
    assert rows["run r3"]["state"] == "failing" and "at verify" in rows["run r3"]["detail"]
    assert rows["mlflow"]["state"] == "failing"  # configured to run here, not started
    assert not any(c["area"] in ("hpc", "cloud", "monitoring") for c in report["components"])

    store.write("runs/r4", run_doc("r4", "chat", "succeeded", "2026-12-07T09:30:00"))
    code, report = status(state, config)
    rows = {c["name"]: c for c in report["components"]}
    assert rows["run r3"]["state"] == "ok" and code == 1  # MLflow is still down


def test_an_unreachable_prometheus_is_one_failing_row_not_a_crash(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]
) -> None:
    config = write_config(
        {
            "metadata": {"name": "x"},
            "mlops": {"mlflow": {"tracking_uri": "file:///nonexistent"}},
            "monitoring": {"prometheus": {"enabled": True, "port": free_port()}},
        }
    )
    code, report = status(tmp_path / "state", config)
    (prometheus,) = [c for c in report["components"] if c["area"] == "monitoring"]
    assert code == 1 and prometheus["state"] == "failing" and "/api/v1/targets" in prometheus["detail"]
