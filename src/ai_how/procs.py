"""The one way ai-how runs subprocesses: foreground with a log file, or as a daemon with a pid file.

A daemon's pid file is JSON: the pid plus what identifies that very process (its start time in clock
ticks from /proc/<pid>/stat, the boot id and a sha256 of its /proc command line). A pid whose process
no longer matches (it exited and the number was reused) is stale: never signalled, its file removed.
Pid files of older versions (a bare number) cannot be verified and are treated the same way: ai-how
never signals a process it cannot prove it started; such a server has to be stopped by hand.
A daemon that exits while this process still runs is reaped through its own Popen handle; ai-how never
waits on a child it did not start (another owner's exit status stays theirs to collect).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
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
from ai_how.fsutil import atomic_write_text
from ai_how.redact import redact


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
    """Start ``cmd`` in its own session with its command line (secrets masked) written to ``log``."""
    log.write(f"$ {redact(shlex.join(cmd), env)}\n".encode())
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


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells one process apart from a later one that got the same pid."""

    pid: int
    starttime: int  # /proc/<pid>/stat field 22: clock ticks after boot
    boot_id: str
    cmdline_sha256: str


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, starttime) of a live pid from /proc/<pid>/stat, None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return rest[0], int(rest[19])  # fields 3 (state) and 22 (starttime)


# The daemons this process started, by pid: their Popen handle and start time. Only these are ever reaped.
_started: dict[int, tuple[subprocess.Popen[bytes], int]] = {}


def _reap_started(pid: int, starttime: int) -> None:
    """Collect the exit status of a daemon this process started once it has exited, so it leaves no zombie.

    Any other child (one the caller started itself) is left alone: its owner's wait() gets its status.
    """
    entry = _started.get(pid)
    if entry is not None and entry[1] == starttime and entry[0].poll() is not None:
        _started.pop(pid, None)


def process_identity(pid: int) -> ProcessIdentity | None:
    """The identity of a running process (None when it does not exist or is a zombie)."""
    stat = _stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        if stat is not None:
            _reap_started(pid, stat[1])
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return ProcessIdentity(pid, stat[1], _boot_id(), hashlib.sha256(cmdline).hexdigest())


EMPTY_CMDLINE = hashlib.sha256(b"").hexdigest()


def _settled_identity(pid: int, timeout_s: float = 2.0) -> ProcessIdentity | None:
    """The identity once the kernel shows the new command line: right after ``Popen`` returns,
    /proc/PID/cmdline can still be empty (seen 183 times in 300 here), and an identity recorded from
    it would not match the running server later."""
    deadline = time.monotonic() + timeout_s
    identity = process_identity(pid)
    while identity is not None and identity.cmdline_sha256 == EMPTY_CMDLINE and time.monotonic() < deadline:
        time.sleep(0.005)
        identity = process_identity(pid)
    return identity


def _write_pidfile(pidfile: Path, pid: int, cmd: Sequence[str], env: Mapping[str, str] | None) -> None:
    identity = _settled_identity(pid) or ProcessIdentity(pid, -1, _boot_id(), "")  # -1: it already exited
    record = {
        "pid": pid,
        "starttime": identity.starttime,
        "boot_id": identity.boot_id,
        "cmdline_sha256": identity.cmdline_sha256,
        "command": redact(shlex.join(cmd), env),  # for people; verification uses the sha256
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(pidfile, json.dumps(record, indent=2) + "\n")


def _recorded(text: str) -> ProcessIdentity | None:
    """The identity a pid file records; None for a bare number (unverifiable) or anything unreadable."""
    try:
        data = json.loads(text)
        return ProcessIdentity(
            int(data["pid"]), int(data["starttime"]), str(data["boot_id"]), str(data["cmdline_sha256"])
        )
    except (ValueError, TypeError, KeyError):
        return None


def _remove_if_unchanged(pidfile: Path, text: str) -> None:
    """Remove a stale pid file unless another process has just replaced it."""
    with contextlib.suppress(FileNotFoundError):
        if pidfile.read_text() == text:
            pidfile.unlink(missing_ok=True)


def verified_pid(pidfile: Path) -> ProcessIdentity | None:
    """The process ``pidfile`` names if it is still the one ai-how started; a stale file is removed."""
    try:
        text = pidfile.read_text()
    except FileNotFoundError:
        return None
    recorded = _recorded(text)
    if recorded is None or process_identity(recorded.pid) != recorded:
        _remove_if_unchanged(pidfile, text)
        return None
    return recorded


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is the one ai-how started, else None."""
    identity = verified_pid(pidfile)
    return identity.pid if identity is not None else None


def start_daemon(
    cmd: Sequence[str],
    *,
    pidfile: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``cmd`` in its own session (it outlives this process); record its pid and identity."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = _spawn(cmd, log, stdout=log, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    stat = _stat(proc.pid)  # not reaped yet: only this handle can collect it
    _started[proc.pid] = (proc, stat[1] if stat is not None else -1)
    _write_pidfile(pidfile, proc.pid, cmd, env)
    return proc.pid


def _signal(identity: ProcessIdentity, sig: signal.Signals) -> None:
    """Send ``sig`` to the process's group when it leads one (start_daemon's), else to the process."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(identity.pid) == identity.pid:
            os.killpg(identity.pid, sig)
        else:
            os.kill(identity.pid, sig)


def signal_daemon(pidfile: Path, sig: signal.Signals) -> bool:
    """Send ``sig`` to the daemon's own process (not its group) if it is verified as ai-how's; True if sent."""
    identity = verified_pid(pidfile)
    if identity is None:
        return False
    try:
        os.kill(identity.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _running(identity: ProcessIdentity) -> bool:
    """Whether that very process (its pid and start time) has not exited yet.

    Not ``process_identity() == identity``: an exiting process reads an empty command line while it still
    tears down its memory and before it closes its files (its listening sockets among them).
    """
    stat = _stat(identity.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == identity.starttime


def _wait_gone(identity: ProcessIdentity, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _running(identity):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop_daemon(pidfile: Path, grace_s: float = 15.0) -> bool:
    """SIGTERM the verified daemon's process group, SIGKILL after ``grace_s``. True if something was stopped.

    A pid file whose process is not the one ai-how started (recycled pid, old format) is removed unsignalled.
    """
    try:
        text = pidfile.read_text()
    except FileNotFoundError:
        return False
    identity = verified_pid(pidfile)
    if identity is None:
        return False
    _signal(identity, signal.SIGTERM)
    if not _wait_gone(identity, grace_s) and process_identity(identity.pid) == identity:
        _signal(identity, signal.SIGKILL)
        _wait_gone(identity, 5.0)
    _reap_started(identity.pid, identity.starttime)
    _remove_if_unchanged(pidfile, text)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def wait_port(port: int, timeout_s: float = 30, host: str = "127.0.0.1") -> None:
    """Wait until something listens on ``host:port``; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_post(url: str, timeout_s: float = 10.0) -> bool:
    """POST with an empty body (e.g. Prometheus' ``/-/reload``); whether it answered 2xx."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
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
