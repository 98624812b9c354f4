"""The server's other HTTP processes (``--http-workers N``): started by the first, gone with it.

The first process runs each LLM's engine process, listening on a Unix socket in a private folder
(0700) with a random key; the workers are the same command plus ``--attach-engines DIR``, the key in
their environment (never in argv). Every process listens on the port with SO_REUSEPORT.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

KEY_ENV = "AI_HOW_ENGINE_KEY"  # the attach key, hex, handed to HTTP workers through their environment
PARENT_ENV = "AI_HOW_SERVER_PID"  # the first process's pid: a worker exits when it is gone
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's; read when it is first imported


def share_engines() -> str:
    """A private folder for the engines' sockets, and the key that opens them (in our environment,
    so the workers inherit it)."""
    os.environ[KEY_ENV] = secrets.token_hex(32)
    return tempfile.mkdtemp(prefix="ai-how-engines-")


def share_metrics() -> str | None:
    """One prometheus_client multiprocess folder for every HTTP process, set before anything imports
    prometheus_client (unless the caller set one); the folder we made, to remove at the end."""
    if os.environ.get(MULTIPROC_ENV):
        return None
    os.environ[MULTIPROC_ENV] = folder = tempfile.mkdtemp(prefix="ai-how-metrics-")
    return folder


def start(argv: list[str], count: int, engines_dir: str) -> list[subprocess.Popen[bytes]]:
    """``count`` workers running this server's command line, attached to the engines in ``engines_dir``."""
    command = [sys.executable, "-m", "ai_how.serving.server", *argv, "--attach-engines", engines_dir]
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    return [subprocess.Popen(command, env=env) for _ in range(count)]


_stopping = threading.Event()


def watch(workers: list[subprocess.Popen[bytes]]) -> None:
    """Say so when a worker dies (the port keeps being served by the others)."""

    def run() -> None:
        told: set[int] = set()
        while not _stopping.is_set():
            for worker in workers:
                code = worker.poll()
                if code is not None and worker.pid not in told and not _stopping.is_set():
                    told.add(worker.pid)
                    from ai_how.serving.metrics import process_gone

                    process_gone(worker.pid)
                    print(
                        f"error: HTTP worker {worker.pid} exited (code {code})", file=sys.stderr, flush=True
                    )
            if len(told) == len(workers):
                return
            time.sleep(1.0)

    threading.Thread(target=run, name="ai-how-workers", daemon=True).start()


def stop(workers: list[subprocess.Popen[bytes]], *folders: str | None, grace_s: float = 10.0) -> None:
    """Stop the workers, then remove the folders they shared (engine sockets, metrics files)."""
    _stopping.set()
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    for folder in folders:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def exit_with_parent() -> None:
    """A worker ends when the process that started it is gone (even killed: no orphans on the port),
    also when that happened before this ran (the pid it was started by is in its environment)."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=run, name="ai-how-parent-watch", daemon=True).start()


def hold_promotion_signals() -> None:
    """A worker ignores SIGUSR1/SIGUSR2 until its server installs their handlers: the first process
    may pass a promotion on while this one still loads (their default action would kill it)."""
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)


def promoted_flag(engines_dir: str) -> Path:
    """Written when the server is promoted, so a worker that starts serving later listens on the
    production port too."""
    return Path(engines_dir) / "promoted"


def shares_port(args: Any) -> bool:
    """Whether this process shares its port with other HTTP processes."""
    return bool(args.http_workers > 1 or args.attach_engines)
