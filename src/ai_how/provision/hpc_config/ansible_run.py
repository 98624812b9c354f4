"""Run ``ansible-playbook`` on the generated files, logged, and turn a failure into the task that failed.

Hosts are checked against ai-how's own known_hosts file: a VM's key is recorded the first time
(``StrictHostKeyChecking=accept-new``) and a changed key stops the run; host key checking is never off.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ai_how.errors import AiHowError
from ai_how.procs import run_logged
from ai_how.provision.hpc_config.playbook import SlurmPlaybook
from ai_how.provision.ssh import ssh_options

_TASK = re.compile(r"^TASK \[(?P<task>.*)\] \**$")
# "fatal: [h]: FAILED! => {...}", "fatal: [h]: UNREACHABLE! => {...}", "failed: [h] (item=x) => {...}"
_FAILED = re.compile(
    r"^(?:fatal|failed): \[(?P<host>[^\]]+)\](?: \(item=.*?\))?(?:: (?:FAILED|UNREACHABLE)!)? => (?P<detail>\{.*)$"
)
_IGNORED = "...ignoring"
_HOST_KEY_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"


def ansible_playbook() -> str:
    """The ``ansible-playbook`` of this Python's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise AiHowError(
            "ansible-playbook is not installed (needed to configure the HPC VMs)",
            fix="pip install 'ai-how[infra]'",
        )
    return found


def ansible_env(out_dir: Path, *, known_hosts: Path) -> dict[str, str]:
    """The environment of an ansible-playbook run: ai-how's known_hosts, no colour, temp files under ``out_dir``."""
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
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
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


def run_playbook(
    playbook: SlurmPlaybook,
    *,
    ssh_key: Path,
    known_hosts: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float = 1800,
) -> None:
    """Configure the HPC VMs: run the generated playbook over SSH as ai-how's admin user.

    Raises AiHowError naming the failed task, its host and the log when the playbook fails.
    """
    command = [
        ansible_playbook(),
        "-i", str(playbook.inventory),
        "--private-key", str(ssh_key),
        str(playbook.playbook),
    ]  # fmt: skip
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    done = run_logged(
        command,
        log_path=log_path,
        env=ansible_env(playbook.out_dir, known_hosts=known_hosts),
        cwd=playbook.out_dir,
        timeout_s=timeout_s,
        on_line=collect,
    )
    if done.returncode == 0:
        return
    failures = failed_tasks(lines)
    if failures:
        first = failures[0]
        if _HOST_KEY_CHANGED in first.detail:
            raise AiHowError(
                f"the SSH host key of {first.host} differs from the one recorded in {known_hosts} "
                f"(task '{first.task}'); SSH refused to connect",
                fix=f"if the VM was recreated, forget its old key with `ssh-keygen -f {known_hosts} -R ADDRESS`; "
                f"see {log_path}",
            )
        raise AiHowError(
            f"configuring the HPC VMs failed at task '{first.task}' on {first.host}: {_one_line(first.detail)}",
            fix=f"see {log_path}",
        )
    errors = [line for line in lines if line.startswith(("ERROR", "[ERROR]"))]
    reason = _one_line(errors[0]) if errors else f"ansible-playbook exited with {done.returncode}"
    raise AiHowError(f"configuring the HPC VMs failed: {reason}", fix=f"see {log_path}")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(re.sub(r"@{3,}", " ", text).split())  # ssh's warning banners
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
