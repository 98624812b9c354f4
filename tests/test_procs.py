"""Daemons and pid files: ai-how signals only the very process it started, never a recycled pid."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_how.procs import process_identity, read_pid, run_logged, start_daemon, stop_daemon

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def starttime(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, read independently of ai-how's parser."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[19])


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process (its own session, so a process-group kill would reach it)."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_a_daemon_is_recorded_with_its_identity_and_stopped(tmp_path: Path) -> None:
    pidfile, log = tmp_path / "d.pid", tmp_path / "d.log"
    pid = start_daemon(SLEEP, pidfile=pidfile, log_path=log)
    record = json.loads(pidfile.read_text())
    assert record["pid"] == pid and record["starttime"] == starttime(pid)
    assert len(record["cmdline_sha256"]) == 64 and "time.sleep(120)" in record["command"]
    assert read_pid(pidfile) == pid
    assert stop_daemon(pidfile, grace_s=10) is True
    assert process_identity(pid) is None and not pidfile.exists()
    assert not Path(f"/proc/{pid}").exists()  # reaped: a long-running ai-how leaves no zombie behind
    assert stop_daemon(pidfile) is False  # nothing left to stop


def _mismatched_starttime(proc: subprocess.Popen[bytes], good: dict[str, object]) -> str:
    return json.dumps(good | {"starttime": starttime(proc.pid) - 1})


def _mismatched_cmdline(proc: subprocess.Popen[bytes], good: dict[str, object]) -> str:
    return json.dumps(good | {"cmdline_sha256": "0" * 64})


def _other_boot(proc: subprocess.Popen[bytes], good: dict[str, object]) -> str:
    return json.dumps(good | {"boot_id": "00000000-0000-0000-0000-000000000000"})


def _legacy_plain_pid(proc: subprocess.Popen[bytes], good: dict[str, object]) -> str:
    return f"{proc.pid}\n"  # what older versions wrote: unverifiable, so never signalled


def _garbage(proc: subprocess.Popen[bytes], good: dict[str, object]) -> str:
    return "{not json"


def matching_record(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    identity = process_identity(proc.pid)
    assert identity is not None
    return {
        "pid": proc.pid,
        "starttime": identity.starttime,
        "boot_id": identity.boot_id,
        "cmdline_sha256": identity.cmdline_sha256,
    }


@pytest.mark.parametrize(
    "stale", [_mismatched_starttime, _mismatched_cmdline, _other_boot, _legacy_plain_pid, _garbage]
)
def test_a_pid_file_naming_another_process_is_stale_and_never_signalled(
    tmp_path: Path,
    sleeper: subprocess.Popen[bytes],
    stale: Callable[[subprocess.Popen[bytes], dict[str, object]], str],
) -> None:
    pidfile = tmp_path / "server.pid"
    text = stale(sleeper, matching_record(sleeper))
    pidfile.write_text(text)
    assert read_pid(pidfile) is None
    assert not pidfile.exists()  # a stale file is removed
    pidfile.write_text(text)
    assert stop_daemon(pidfile, grace_s=1) is False
    assert sleeper.poll() is None, "stop_daemon signalled a process ai-how did not start"
    assert not pidfile.exists()


def test_the_same_record_with_the_right_identity_is_stopped(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """The control for the test above: only the identity fields differ, and this one is signalled."""
    pidfile = tmp_path / "server.pid"
    pidfile.write_text(json.dumps(matching_record(sleeper)))
    assert read_pid(pidfile) == sleeper.pid
    assert stop_daemon(pidfile, grace_s=5) is True
    assert sleeper.wait(5) == -15


def test_an_exited_child_ai_how_did_not_start_keeps_its_exit_status_for_its_owner() -> None:
    """ai-how reads a zombie as not running but never reaps it: the caller's wait() still gets the status."""
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    for _ in range(200):
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert process_identity(child.pid) is None
    assert child.wait(5) == 3


def test_a_daemon_that_died_at_start_reads_as_not_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "d.pid"
    start_daemon([sys.executable, "-c", "raise SystemExit(3)"], pidfile=pidfile, log_path=tmp_path / "d.log")
    for _ in range(100):
        if read_pid(pidfile) is None:
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert read_pid(pidfile) is None and not pidfile.exists()


def test_the_logged_command_line_masks_secrets(tmp_path: Path) -> None:
    log = tmp_path / "cmd.log"
    secret = "s3cr3t-Value-42"
    env = {"PATH": "/usr/bin:/bin", "MY_DB_PASSWORD": secret}
    run_logged(
        [sys.executable, "-c", "pass", f"postgresql://ai:{secret}@db:5432/mlflow", f"--token={secret}"],
        log_path=log,
        env=env,
    )
    first = log.read_text().splitlines()[0]
    assert first.startswith("$ ") and "postgresql://ai:***@db:5432/mlflow" in first
    assert secret not in log.read_text()


def test_signal_daemon_reaches_only_a_verified_daemon(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    import signal

    from ai_how.procs import signal_daemon

    pidfile = tmp_path / "server.pid"
    pidfile.write_text(f"{sleeper.pid}\n")
    assert signal_daemon(pidfile, signal.SIGTERM) is False and sleeper.poll() is None
    pidfile.write_text(json.dumps(matching_record(sleeper)))
    assert signal_daemon(pidfile, signal.SIGTERM) is True
    assert sleeper.wait(5) == -signal.SIGTERM
