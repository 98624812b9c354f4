"""Which container builder this host has (podman, buildah or docker) and the command lines each takes.

``auto`` takes the first usable one in that order. docker counts only when its daemon answers: a
client binary alone (common on CI machines) cannot build. A failed build's log is matched against
known host problems so the error says what to change, not only that it failed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ai_how.errors import AiHowError
from ai_how.procs import log_tail, run_logged

BUILDERS = ("podman", "buildah", "docker")
CHOICES = ("auto", *BUILDERS)
INSTALL_FIX = "install one: `apt-get install podman` (or buildah, or docker.io with its daemon running)"
DAEMON_PROBE_S = 20.0

# Log lines of builds that failed because of the host, and what to change there (measured on Debian 12
# inside a container: cgroup v1+v2 hybrid, no CAP_SYS_RESOURCE, no systemd).
KNOWN_HOST_FAILURES: tuple[tuple[str, str], ...] = (
    (
        "cgroups in hybrid mode not supported",
        "crun cannot run on this cgroup v1+v2 hybrid host: `apt-get install runc` and set "
        'CONTAINERS_CONF to a containers.conf with `[engine] runtime = "runc"`',
    ),
    *(
        (
            needle,
            "the default container ulimits exceed what this host lets podman set: in CONTAINERS_CONF put "
            '`default_ulimits = ["nofile=N:N", "nproc=4096:4096"]` under [containers], N at most `ulimit -Hn`',
        )
        for needle in ("setrlimit `RLIMIT_", "error setting rlimit")  # crun's and runc's wording
    ),
    (
        "Cannot connect to the Docker daemon",
        "start the Docker daemon, or install podman (`apt-get install podman`) and pass --builder podman",
    ),
)


@dataclass(frozen=True)
class Builder:
    """One builder found on this host: its name (podman, buildah, docker) and executable."""

    name: str
    executable: str

    def build_cmd(
        self,
        *,
        containerfile: Path,
        context: Path,
        tag: str,
        build_args: Mapping[str, str],
        offline: bool,
    ) -> list[str]:
        sub = "bud" if self.name == "buildah" else "build"
        cmd = [self.executable, sub, "-f", str(containerfile), "-t", tag]
        if self.name != "docker":
            # The OCI format drops HEALTHCHECK; the Docker format keeps it (podman and docker honour it).
            cmd += ["--format", "docker"]
        if offline:
            cmd += ["--network", "none"]
        for key, value in build_args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        return [*cmd, str(context)]

    def push_cmd(self, tag: str) -> list[str]:
        return [self.executable, "push", tag]


def _docker_daemon_answers(executable: str, log_path: Path, env: Mapping[str, str] | None) -> bool:
    try:
        done = run_logged(
            [executable, "info", "--format", "{{.ServerVersion}}"],
            log_path=log_path,
            env=env,
            timeout_s=DAEMON_PROBE_S,
        )
    except AiHowError:
        return False
    return done.returncode == 0


def find_builder(choice: str, *, log_path: Path, env: Mapping[str, str] | None = None) -> Builder:
    """The builder ``choice`` names (``auto``: the first usable of podman, buildah, docker) or an error
    that says what to install. ``env`` (default: this process's) gives the PATH searched."""
    if choice not in CHOICES:
        raise AiHowError(f"--builder {choice}: unknown builder", fix=f"use one of {', '.join(CHOICES)}")
    search_path = (env if env is not None else os.environ).get("PATH", os.defpath)
    names: Sequence[str] = BUILDERS if choice == "auto" else (choice,)
    skipped: list[str] = []
    for name in names:
        executable = shutil.which(name, path=search_path)
        if executable is None:
            continue
        if name == "docker" and not _docker_daemon_answers(executable, log_path, env):
            skipped.append(f"{executable} (no Docker daemon answers)")
            continue
        return Builder(name, executable)
    wanted = "no container builder (podman, buildah or docker)" if choice == "auto" else f"no usable {choice}"
    found = f"; found only {', '.join(skipped)}" if skipped else ""
    raise AiHowError(f"{wanted} on this host's PATH{found}", fix=INSTALL_FIX)


def host_failure_fix(log_path: Path) -> str | None:
    """What to change on this host, when the log shows one of the known host problems."""
    text = log_tail(log_path, lines=200)
    return next((fix for needle, fix in KNOWN_HOST_FAILURES if needle in text), None)
