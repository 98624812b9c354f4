"""SLURM executor: sbatch, track with scontrol (sacct when accounting exists), stream the log, scancel on abort."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from ai_how.config.models import ClusterConfig, SlurmConfig
from ai_how.errors import AiHowError
from ai_how.executors.base import JobFailedError, JobResult, JobSpec, shared_root
from ai_how.slurm import sbatch
from ai_how.slurm.commands import (
    FAILURES,
    Features,
    JobInfo,
    SlurmVersion,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_job,
)
from ai_how.slurm.transport import Transport, transport_for

POLL_S = 0.5


class SlurmError(AiHowError):
    pass


class SlurmClient:
    """The SLURM commands ai-how uses, over one transport, with the version probed once."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._features: Features | None = None

    def _run(self, argv: list[str], timeout_s: float = 60) -> str:
        result = self.transport.run(argv, timeout_s)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise SlurmError(
                f"{argv[0]} failed on {self.transport.where}: {message[-1] if message else result.returncode}"
            )
        return result.stdout

    @property
    def features(self) -> Features:
        if self._features is None:
            self._features = Features.of(SlurmVersion.parse(self._run(["sbatch", "--version"])))
        return self._features

    def submit(self, script_path: str) -> str:
        return parse_sbatch_parsable(self._run(["sbatch", "--parsable", script_path]))

    def job(self, job_id: str) -> JobInfo | None:
        result = self.transport.run(["scontrol", "-o", "show", "job", job_id])
        if result.returncode == 0 and result.stdout.strip():
            return parse_scontrol_job(result.stdout.splitlines()[0])
        if "Invalid job id" not in result.stderr:
            raise SlurmError(f"scontrol failed on {self.transport.where}: {result.stderr.strip()}")
        # The controller forgot the job (MinJobAge): ask accounting, when there is one.
        acct = self.transport.run(["sacct", "-j", job_id, "-P", "-n", "-o", "JobID,State,ExitCode,NodeList"])
        return parse_sacct(acct.stdout, job_id) if acct.returncode == 0 else None

    def state(self, job_id: str) -> str | None:
        """The job's state from ``squeue`` (None once squeue no longer lists it). ``--only-job-state``
        (23.02+) spares the controller the full job record; older versions get the plain query."""
        argv = ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"]
        if self.features.only_job_state:
            argv.insert(1, "--only-job-state")
        result = self.transport.run(argv)
        lines = result.stdout.split() if result.returncode == 0 else []
        return lines[0] if lines else None

    def cancel(self, job_id: str) -> None:
        """Cancel exactly this job (never a user's or a name's jobs: the id must be a job id)."""
        if not re.fullmatch(r"\d+(_\d+)?", job_id):
            raise SlurmError(f"refusing to scancel {job_id!r}: not a SLURM job id")
        self.transport.run(["scancel", job_id])

    def hostnames(self, nodelist: str) -> list[str]:
        """Expand a compressed nodelist (``gpu[01-03]``) the way SLURM does."""
        return self._run(["scontrol", "show", "hostnames", nodelist]).split()


class SlurmExecutor:
    name = "slurm"

    def __init__(self, config: ClusterConfig, state_dir: Path, transport: Transport | None = None) -> None:
        hpc = config.clusters.hpc
        self.slurm: SlurmConfig = hpc.slurm if hpc is not None else SlurmConfig()
        self.client = SlurmClient(transport or transport_for(self.slurm.login, self.slurm.ssh_options))
        self.shared = shared_root(config, state_dir)

    def submit(self, spec: JobSpec) -> tuple[str, str, str]:
        """Render and submit the job without waiting: (job id, stdout path, stderr path)."""
        paths = sbatch.job_paths(self.shared, spec)
        script = sbatch.render(spec, self.slurm, self.client.features, paths)
        self.client.transport.write_text(paths.script, script)
        job_id = self.client.submit(paths.script)
        return (job_id, *paths.resolved(job_id))

    def run(self, spec: JobSpec, on_line: Callable[[str], None] | None = None) -> JobResult:
        started = time.monotonic()
        job_id, stdout, stderr = self.submit(spec)
        log = _LogFollower(self.client.transport, spec.log_path, on_line)
        log.note(
            f"submitted SLURM job {job_id} ({self.client.features.version}) from {sbatch.job_paths(self.shared, spec).script}"
        )
        try:
            info = self._wait(job_id, log, stdout, stderr)
        except BaseException:
            log.note(f"cancelling SLURM job {job_id}")
            self.client.cancel(job_id)
            self._wait(job_id, log, stdout, stderr, timeout_s=60)
            raise
        log.follow(stdout, stderr)
        if not info.succeeded:
            raise self._failure(info, stderr, spec)
        if info.nodelist:
            log.note(f"job {job_id} ran on {', '.join(self.client.hostnames(info.nodelist))}")
        return JobResult(job_id, 0, spec.log_path, time.monotonic() - started)

    def _wait(
        self, job_id: str, log: _LogFollower, stdout: str, stderr: str, timeout_s: float | None = None
    ) -> JobInfo:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last_state = ""
        info: JobInfo | None = None
        while True:
            # A cheap state poll (squeue); the full record (scontrol/sacct) only when the state moves.
            state = self.client.state(job_id)
            if info is None or state != last_state or state is None:
                info = self.client.job(job_id)
                if info is None:
                    raise SlurmError(
                        f"SLURM no longer knows job {job_id} and has no accounting to ask",
                        fix="raise MinJobAge in slurm.conf or enable accounting (slurmdbd)",
                    )
                if info.state != last_state:
                    log.note(
                        f"job {job_id}: {info.state}"
                        + (f" ({info.reason})" if info.reason not in ("", "None") else "")
                    )
                last_state = info.state
            log.follow(stdout, stderr)
            if info.finished or (deadline is not None and time.monotonic() > deadline):
                return info
            time.sleep(POLL_S)

    def _failure(self, info: JobInfo, stderr_path: str, spec: JobSpec) -> JobFailedError:
        tail = (
            self.client.transport.read_from(stderr_path, 0)
            .decode("utf-8", "replace")
            .strip()
            .splitlines()[-15:]
        )
        what = FAILURES.get(info.state, info.state.lower())
        if info.state == "FAILED":
            what = f"failed with exit code {info.exit_code}" + (
                f" (signal {info.signal})" if info.signal else ""
            )
        cause = next(
            (line.removeprefix("error: ") for line in reversed(tail) if line.startswith("error: ")), None
        )
        detail = f": {cause}" if cause else (":\n" + "\n".join(tail) if tail else "")
        return JobFailedError(
            f"SLURM job {info.job_id} ({spec.workload}) {what}{detail}",
            fix=f"see {stderr_path} and {spec.log_path}",
        )


class _LogFollower:
    """Copies the job's stdout/stderr into the stage log as they grow (shared storage or SSH)."""

    def __init__(self, transport: Transport, log_path: Path, on_line: Callable[[str], None] | None) -> None:
        self.transport, self.log_path, self.on_line = transport, log_path, on_line
        self.offsets: dict[str, int] = {}
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def note(self, line: str) -> None:
        self._emit(line)

    def _emit(self, line: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.on_line is not None:
            self.on_line(line)

    def follow(self, *paths: str) -> None:
        for path in paths:
            data = self.transport.read_from(path, self.offsets.get(path, 0))
            complete = data[: data.rfind(b"\n") + 1]  # only whole lines; the rest comes next time
            if complete:
                self.offsets[path] = self.offsets.get(path, 0) + len(complete)
                for line in complete.decode("utf-8", "replace").splitlines():
                    self._emit(line)
