"""`ai-how stack up|down|status` with the real MLflow server: pid files, health waits, state kept across restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.services import make_env


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


def _lock_waiters(lock: Path) -> int:
    """How many processes are blocked in flock() on ``lock`` (from /proc/locks)."""
    inode = str(lock.stat().st_ino)
    return sum(
        1
        for line in Path("/proc/locks").read_text().splitlines()
        if "->" in line and line.split()[-3].rsplit(":", 1)[-1] == inode
    )


def _mlflow_servers(port: int) -> list[int]:
    """Pids of `python -m mlflow server ... --port PORT` processes (the top-level process of each server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mlflow" in argv and b"server" in argv and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_two_concurrent_stack_ups_start_one_mlflow(tmp_path: Path) -> None:
    """Both `stack up`s reach the stack lock while the test holds it; released, one starts MLflow and
    the other finds it running."""
    import subprocess

    import yaml

    from ai_how.state.store import StateStore
    from tests.services import AI_HOW

    env = make_env(tmp_path)
    cfg = str(env.config)
    port = yaml.safe_load(env.config.read_text())["mlops"]["mlflow"]["port"]
    procs: list[subprocess.Popen[str]] = []
    try:
        with StateStore(env.state_dir).lock("stack"):
            lock = env.state_dir / "locks" / "stack.lock"
            procs = [
                subprocess.Popen(
                    [AI_HOW, "stack", "up", "-c", cfg, "--json"],
                    env=env.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            deadline = time.monotonic() + 120
            while _lock_waiters(lock) < 2 and all(p.poll() is None for p in procs):
                assert time.monotonic() < deadline, "`stack up` never waited for the stack lock"
                time.sleep(0.1)
            assert all(p.poll() is None for p in procs), "`stack up` ran without taking the stack lock"
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        pids = {json.loads(out)[0]["pid"] for out, _ in outputs}
        assert len(pids) == 1
        assert _mlflow_servers(port) == list(pids)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        env.cli("stack", "down", "-c", cfg, check=False)
    assert _mlflow_servers(port) == []
