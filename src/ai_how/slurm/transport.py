"""How SLURM commands reach the cluster: on this machine (it is the login node), or over SSH."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Transport(Protocol):
    where: str

    def run(self, argv: list[str], timeout_s: float = 60) -> Result: ...

    def write_text(self, path: str, text: str) -> None: ...

    def read_from(self, path: str, offset: int) -> bytes:
        """Bytes of ``path`` from ``offset`` on (b'' if it does not exist yet)."""
        ...


def _run(argv: list[str], timeout_s: float, stdin: str | None = None) -> Result:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, input=stdin, check=False
        )
    except FileNotFoundError:
        raise AiHowError(
            f"{argv[0]} not found", fix="install the SLURM client (slurm-wlm) or configure slurm.login"
        ) from None
    except subprocess.TimeoutExpired:
        raise AiHowError(f"{' '.join(argv[:3])} did not answer within {timeout_s:.0f} s") from None
    return Result(done.returncode, done.stdout, done.stderr)


class LocalTransport:
    """The workstation is the login node: run the commands here, read the shared storage directly."""

    where = "this machine"

    def run(self, argv: list[str], timeout_s: float = 60) -> Result:
        return _run(argv, timeout_s)

    def write_text(self, path: str, text: str) -> None:
        atomic_write_text(Path(path), text)

    def read_from(self, path: str, offset: int) -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read()
        except FileNotFoundError:
            return b""


class SSHTransport:
    """``user@host[:port]`` of a login node, key authentication only (BatchMode), one multiplexed connection."""

    def __init__(self, login: str, options: list[str] | None = None) -> None:
        target, _, port = login.partition(":")
        self.where = target
        control = Path.home() / ".ssh" / "ai-how-%C"
        control.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.base = [
            "ssh",
            *("-o", "BatchMode=yes", "-o", "ConnectTimeout=10"),
            *("-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=10m"),
            *(options or []),
        ]
        if port:
            self.base += ["-p", port]
        self.base.append(target)

    def _ssh(self, command: str, timeout_s: float, stdin: str | None = None) -> Result:
        result = _run([*self.base, command], timeout_s, stdin)
        if result.returncode == 255:
            raise AiHowError(
                f"cannot reach the login node {self.where} over SSH: {result.stderr.strip()[-300:]}",
                fix="check clusters.hpc.slurm.login and that key authentication works (ssh -o BatchMode=yes)",
            )
        return result

    def run(self, argv: list[str], timeout_s: float = 60) -> Result:
        return self._ssh(shlex.join(argv), timeout_s)

    def write_text(self, path: str, text: str) -> None:
        quoted = shlex.quote(path)
        result = self._ssh(
            f"mkdir -p $(dirname {quoted}) && cat > {quoted}.tmp && mv {quoted}.tmp {quoted}", 60, text
        )
        if result.returncode != 0:
            raise AiHowError(f"cannot write {path} on {self.where}: {result.stderr.strip()}")

    def read_from(self, path: str, offset: int) -> bytes:
        result = self._ssh(f"tail -c +{offset + 1} {shlex.quote(path)} 2>/dev/null || true", 60)
        return result.stdout.encode()


def transport_for(login: str | None, options: list[str] | None = None) -> Transport:
    return SSHTransport(login, options) if login else LocalTransport()
