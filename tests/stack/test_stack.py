"""`ai-how stack up|down|status` with the real MLflow server: pid files, health waits, state kept across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.services import make_env

pytestmark = pytest.mark.slow


def test_stack_lifecycle_keeps_state_across_down_and_up(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    cfg = str(env.config)
    up = json.loads(env.cli("stack", "up", "-c", cfg, "--json").stdout)
    assert [(s["name"], s["healthy"]) for s in up] == [("mlflow", True)]
    assert (env.state_dir / "stack" / "mlflow.pid").exists()
    # Idempotent: a second `up` finds it running and starts nothing new.
    again = json.loads(env.cli("stack", "up", "-c", cfg, "--json").stdout)
    assert again[0]["pid"] == up[0]["pid"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(up[0]["url"])
    experiment = client.create_experiment("kept-across-restarts")
    stopped = json.loads(env.cli("stack", "down", "-c", cfg, "--json").stdout)
    assert stopped["stopped"] == ["mlflow"]
    down = env.cli("stack", "status", "-c", cfg, "--json", check=False)
    assert down.returncode == 1 and json.loads(down.stdout)[0]["healthy"] is False

    env.cli("stack", "up", "-c", cfg)
    assert client.get_experiment_by_name("kept-across-restarts").experiment_id == experiment
    env.cli("stack", "down", "-c", cfg)


def test_port_taken_by_a_foreign_process_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    env = make_env(tmp_path)
    import yaml

    port = yaml.safe_load(env.config.read_text())["mlops"]["mlflow"]["port"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        result = env.cli("stack", "up", "-c", str(env.config), check=False)
    assert result.returncode == 1
    assert "already taken by a process ai-how did not start" in result.stderr
    assert "Traceback" not in result.stderr


def test_postgres_password_variable_must_be_set(tmp_path: Path) -> None:
    import yaml

    env = make_env(tmp_path)
    data = yaml.safe_load(env.config.read_text())
    data["mlops"]["mlflow"]["backend_store"] = {"type": "postgresql"}
    data["mlops"]["postgresql"] = {"enabled": True, "password_env": "NOT_SET_PG_PASSWORD"}
    env.config.write_text(yaml.safe_dump(data))
    result = env.cli("stack", "up", "-c", str(env.config), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT_SET_PG_PASSWORD is not set" in result.stderr and "Traceback" not in result.stderr
