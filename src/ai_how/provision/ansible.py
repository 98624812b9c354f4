"""Running ``ansible-playbook`` the one ai-how way: environment, progress, and a failure named by task and host.

Used by the SLURM playbook (:mod:`ai_how.provision.hpc_config.ansible_run`) and by Kubespray
(:mod:`ai_how.kube.kubespray.runner`). Hosts are checked against ai-how's own known_hosts file: a VM's
key is recorded the first time (``StrictHostKeyChecking=accept-new``) and a changed key stops the run;
host key checking is never off, whatever a playbook's own ``ansible.cfg`` says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ai_how.errors import AiHowError
from ai_how.procs import run_logged
from ai_how.provision.ssh import ssh_options

_PLAY = re.compile(r"^PLAY \[(?P<play>.*)\] \**$")
_TASK = re.compile(r"^TASK \[(?P<task>.*)\] \**$")
_RECAP_HOST = re.compile(r"^(?P<host>\S+)\s+: ok=\d+")
# "fatal: [h]: FAILED! => {...}", "fatal: [h]: UNREACHABLE! => {...}", "failed: [h] (item=x) => {...}"
_FAILED = re.compile(
    r"^(?:fatal|failed): \[(?P<host>[^\]]+)\](?: \(item=.*?\))?(?:: (?:FAILED|UNREACHABLE)!)? => (?P<detail>\{.*)$"
)
_IGNORED = "...ignoring"
HOST_KEY_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"


def ansible_playbook() -> str:
    """The ``ansible-playbook`` of this Python's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise AiHowError(
            "ansible-playbook is not installed (needed to configure the VMs)",
            fix="pip install 'ai-how[infra]'",
        )
    return found


def ansible_env(out_dir: Path, *, known_hosts: Path) -> dict[str, str]:
    """The environment of an ansible-playbook run: ai-how's known_hosts, no colour, temp files under ``out_dir``.

    Environment variables win over a playbook directory's ``ansible.cfg`` (Kubespray's turns host key
    checking off and sends known hosts to /dev/null): these keep the checks on and the output parseable.
    """
    ssh_args = [
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        *ssh_options(known_hosts=known_hosts),
    ]
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_SSH_ARGS": shlex.join(ssh_args),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",  # the output failed_tasks() reads
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",  # one line per failed result
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": str(out_dir / ".ansible-tmp"),
            "ANSIBLE_PIPELINING": "1",
            "ANSIBLE_TIMEOUT": "30",
            "ANSIBLE_SSH_RETRIES": "3",
            # ansible-core refuses to start unless the locale's encoding is UTF-8.
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
    )
    return env


@dataclass(frozen=True)
class FailedTask:
    task: str
    host: str
    detail: str


def _detail(raw: str) -> str:
    """The useful part of a failed task's JSON result: its msg, and what a command printed last."""
    try:
        result = json.loads(raw)
    except ValueError:
        return raw.strip()
    if not isinstance(result, dict):
        return raw.strip()
    if result.get("censored"):
        return "output hidden (no_log)"
    parts = []
    msg = result.get("msg")
    if isinstance(msg, str) and msg.strip():
        parts.append(msg.strip())
    for key in ("stderr", "stdout"):  # a command's own words (sinfo's node states, a tool's error)
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(" / ".join(value.strip().splitlines()[-5:]))
            break
    return ": ".join(parts) or raw.strip()


def failed_tasks(lines: Iterable[str]) -> list[FailedTask]:
    """The tasks that failed in ansible-playbook's default output (ignored failures left out)."""
    task = "?"
    found: list[FailedTask] = []
    for line in lines:
        if match := _TASK.match(line):
            task = match["task"]
        elif match := _FAILED.match(line):
            found.append(FailedTask(task, match["host"], _detail(match["detail"])))
        elif line.strip() == _IGNORED and found:
            found.pop()
    return found


def progress_events(
    on_event: Callable[[str], None], *, clock: Callable[[], float] = time.monotonic
) -> Callable[[str], None]:
    """A line handler that reports only the landmarks of a run: each PLAY and TASK with the seconds since
    the start, and the recap line of each host (``node1 : ok=… failed=…``)."""
    start = clock()
    in_recap = False

    def on_line(line: str) -> None:
        nonlocal in_recap
        elapsed = f"{clock() - start:5.0f} s"
        if line.startswith("PLAY RECAP"):
            in_recap = True
        elif match := _PLAY.match(line):
            on_event(f"{elapsed}  PLAY {match['play']}")
        elif match := _TASK.match(line):
            on_event(f"{elapsed}  TASK {match['task']}")
        elif in_recap and _RECAP_HOST.match(line):
            on_event(f"{elapsed}  {' '.join(line.split())}")

    return on_line


def one_line(text: str, limit: int = 300) -> str:
    """``text`` flattened to one line of at most ``limit`` characters."""
    flat = " ".join(re.sub(r"@{3,}", " ", text).split())  # ssh's warning banners
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def run_ansible(
    command: Sequence[str],
    *,
    what: str,
    cwd: Path,
    env: Mapping[str, str],
    known_hosts: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float = 1800,
) -> None:
    """Run an ``ansible-playbook`` command line; on failure raise AiHowError naming ``what`` failed, at which
    task, on which host, with the log's path (a changed SSH host key gets its own fix)."""
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    done = run_logged(command, log_path=log_path, env=env, cwd=cwd, timeout_s=timeout_s, on_line=collect)
    if done.returncode == 0:
        return
    failures = failed_tasks(lines)
    if failures:
        first = failures[0]
        if HOST_KEY_CHANGED in first.detail:
            raise AiHowError(
                f"the SSH host key of {first.host} differs from the one recorded in {known_hosts} "
                f"(task '{first.task}'); SSH refused to connect",
                fix=f"if the VM was recreated, forget its old key with `ssh-keygen -f {known_hosts} -R ADDRESS`; "
                f"see {log_path}",
            )
        raise AiHowError(
            f"{what} failed at task '{first.task}' on {first.host}: {one_line(first.detail)}",
            fix=f"see {log_path}",
        )
    errors = [line for line in lines if line.startswith(("ERROR", "[ERROR]"))]
    reason = one_line(errors[0]) if errors else f"ansible-playbook exited with {done.returncode}"
    raise AiHowError(f"{what} failed: {reason}", fix=f"see {log_path}")
