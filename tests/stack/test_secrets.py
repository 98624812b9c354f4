"""`stack up` with PostgreSQL: the password is in no command line (`ps`), log, state file or output."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.services import AI_HOW, Postgres, make_env

pytestmark = pytest.mark.slow


def command_lines() -> dict[int, str]:
    """Every process's /proc/<pid>/cmdline, arguments joined by spaces."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
    return found


def files_holding(root: Path, secret: str) -> list[Path]:
    """Files under ``root`` (logs, pid files, state documents) whose bytes contain ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_postgres_password_never_leaves_the_environment(tmp_path: Path, postgres: Postgres) -> None:
    env = make_env(tmp_path, postgres=postgres)
    cfg, password = str(env.config), postgres.password
    seen: set[str] = set()
    up = subprocess.Popen(
        [AI_HOW, "stack", "up", "-c", cfg, "--json"],
        env=env.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while up.poll() is None:  # sample the process table all through start-up
            seen |= set(command_lines().values())
            time.sleep(0.05)
        out, err = up.communicate()
        assert up.returncode == 0, out + err
        (mlflow,) = json.loads(out)
        assert mlflow["healthy"]
        seen |= set(command_lines().values())
        assert any("mlflow server" in line and "postgresql" in line for line in seen)
        leaks = [line for line in seen if password in line]
        assert not leaks, leaks
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert password not in ps
        status = env.cli("stack", "status", "-c", cfg, "--json")
        assert password not in out + err + status.stdout + status.stderr
        assert (env.state_dir / "stack" / "mlflow.pid").exists()
        assert files_holding(env.state_dir, password) == []  # pid file, log, state while it runs

        # MLflow really uses PostgreSQL, authenticated with the password from its environment.
        from mlflow.tracking import MlflowClient

        MlflowClient(mlflow["url"]).create_experiment("password-from-env")
        names = postgres.psql("SELECT name FROM experiments", database=postgres.database).split()
        assert "password-from-env" in names
        server_env = Path(f"/proc/{mlflow['pid']}/environ").read_bytes().split(b"\0")
        assert f"PGPASSWORD={password}".encode() in server_env
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        env.cli("stack", "down", "-c", cfg, check=False)
    assert files_holding(env.state_dir, password) == []  # and everything left after `stack down`
    logged = (env.state_dir / "stack" / "mlflow.log").read_text()
    assert logged.startswith("$ ") and "--backend-store-uri postgresql+psycopg2://" in logged
