"""The one way ai-how runs subprocesses: foreground with a log file, or as a daemon with a pid file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ai_how.errors import AiHowError


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip()
    except FileNotFoundError:
        return ""


def _spawn(
    cmd: Sequence[str],
    log: BinaryIO,
    *,
    stdout: Any,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    stdin: Any = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with its command line written to ``log``; stderr joins stdout."""
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    try:
        return subprocess.Popen(
            list(cmd),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise AiHowError(
            f"cannot run {cmd[0]}: {exc.strerror}", fix="check that it is installed (`make setup`)"
        ) from None


@dataclass
class Completed:
    returncode: int
    log_path: Path
    duration_s: float

    def tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_logged(
    cmd: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """Run ``cmd`` to completion, appending its stdout+stderr to ``log_path`` (and to ``on_line``).

    The child gets its own process group; Ctrl-C or a timeout terminates the whole group.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("ab") as log:
        proc = _spawn(cmd, log, stdout=subprocess.PIPE, env=env, cwd=cwd)
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                if on_line is not None:
                    on_line(raw.decode("utf-8", "replace").rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            reader.join(5)
            raise AiHowError(f"{cmd[0]} did not finish within {timeout_s:.0f} s; see {log_path}") from None
        except BaseException:
            _kill_group(proc)
            raise
        reader.join(5)
    return Completed(proc.returncode, log_path, time.monotonic() - start)


# --------------------------------------------------------------------------- daemons


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process is alive, else None (a stale file is removed)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    # A zombie child of ours counts as dead.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            pidfile.unlink(missing_ok=True)
            return None
    return pid


def start_daemon(
    cmd: Sequence[str],
    *,
    pidfile: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``cmd`` in its own session (it outlives this process); record its pid."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = _spawn(cmd, log, stdout=log, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_daemon(pidfile: Path, grace_s: float = 15.0) -> bool:
    """SIGTERM the daemon's process group, SIGKILL after ``grace_s``. True if something was stopped."""
    pid = read_pid(pidfile)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and read_pid(pidfile) is not None:
        time.sleep(0.1)
    if read_pid(pidfile) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    pidfile.unlink(missing_ok=True)
    return True


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.25,
) -> None:
    """Poll ``ready`` until it is true; fail early if ``alive`` says the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if alive is not None and not alive():
            tail = log_tail(log_path, 15) if log_path else ""
            raise AiHowError(
                f"{what} exited during start-up" + (f":\n{tail}" if tail else ""),
                fix=f"see {log_path}" if log_path else None,
            )
        time.sleep(interval_s)
    raise AiHowError(f"{what} not ready after {timeout_s:.0f} s", fix=f"see {log_path}" if log_path else None)
