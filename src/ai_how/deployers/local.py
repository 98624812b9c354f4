"""Local deployer: model servers on this machine, a new version beside the old one until it is promoted.

``deploy`` starts the new version as a *candidate* on a free loopback port while the production
server keeps answering on ``mlops.serving.port``. ``promote`` makes the candidate listen on the
production port too (SIGUSR1; both share it through SO_REUSEPORT), waits until the production port
answers with the new version, and only then stops the previous server: no gap, no window in which an
unverified version serves production. One production port serves one model at a time.

What runs is recorded in the state store (document ``serving/local``); every deploy and promote
holds the ``deploy/local`` lock, so two ai-how processes never start or switch servers at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.deployers.base import DeployError, Deployment, DeployRequest
from ai_how.layout import Layout
from ai_how.procs import (
    free_port,
    http_ok,
    log_tail,
    read_pid,
    signal_daemon,
    start_daemon,
    stop_daemon,
    wait_until,
)
from ai_how.serving.server import VERSION_HEADER
from ai_how.state.store import StateStore

READY_TIMEOUT_S = 180.0
SWITCH_TIMEOUT_S = 30.0
STATE_DOC = "serving/local"
LOCK = "deploy/local"


def served_version(base_url: str, model_name: str, timeout_s: float = 2.0) -> str | None:
    """The model version a server reports (response header), or None when it does not answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{base_url}/v2/models/{model_name}/ready")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            header = response.headers.get(VERSION_HEADER)
            return str(header) if header is not None else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class ServerRecord:
    """One model-server process ai-how started."""

    model: str
    version: int
    port: int
    pidfile: str
    log: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> ServerRecord:
        return cls(data["model"], int(data["version"]), int(data["port"]), data["pidfile"], data["log"])

    def alive(self) -> bool:
        return read_pid(Path(self.pidfile)) is not None


class LocalDeployer:
    name = "local"

    def __init__(self, config: ClusterConfig, layout: Layout) -> None:
        self.config = config
        self.layout = layout
        self.store = StateStore(layout.root)
        serving = config.mlops.serving
        self.host = serving.host
        self.base_url = f"http://{serving.host}:{serving.port}"

    # -- state
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.store.lock(LOCK):
            yield

    def _state(self) -> dict[str, Any]:
        return self.store.read(STATE_DOC)

    def production(self) -> ServerRecord | None:
        record = self._state().get("production")
        return ServerRecord.of(record) if record else None

    def candidate(self, model_name: str, version: int) -> ServerRecord | None:
        record = self._state().get("candidates", {}).get(f"{model_name}/v{version}")
        return ServerRecord.of(record) if record else None

    def servers(self) -> list[tuple[str, ServerRecord]]:
        """Every server ai-how started here, as (role, record): role 'production' or 'candidate'."""
        state = self._state()
        found = [("production", ServerRecord.of(state["production"]))] if state.get("production") else []
        found += [("candidate", ServerRecord.of(c)) for c in state.get("candidates", {}).values()]
        return found

    def url_of(self, record: ServerRecord) -> str:
        return f"http://{self.host}:{record.port}"

    # -- deploy: a candidate beside production
    def deploy(self, request: DeployRequest) -> Deployment:
        with self._locked():
            if self._already_promoted(request.model_name, request.version):  # e.g. a retried rollback
                production = self.production()
                pid = read_pid(Path(production.pidfile)) if production else None
                return Deployment(
                    self.base_url,
                    request.model_name,
                    request.version,
                    0.0,
                    {"pid": str(pid), "role": "production"},
                )
            stale = self.candidate(request.model_name, request.version)
            if stale is not None:  # a resumed deploy starts the candidate afresh
                stop_daemon(Path(stale.pidfile))
            port = free_port(self.host)
            pidfile = self.layout.serving / f"{request.model_name}-v{request.version}.pid"
            record = ServerRecord(
                request.model_name, request.version, port, str(pidfile), str(request.log_path)
            )
            started = time.monotonic()
            self._start(request, record)
            with self.store.transaction(STATE_DOC) as state:
                state.setdefault("candidates", {})[f"{request.model_name}/v{request.version}"] = vars(record)
        production = self.production()
        note = (
            f"{production.model} v{production.version} keeps serving {self.base_url} until promoted"
            if production is not None and production.alive()
            else f"nothing serves {self.base_url} yet"
        )
        return Deployment(
            self.url_of(record),
            request.model_name,
            request.version,
            time.monotonic() - started,
            {"pid": str(read_pid(pidfile)), "log": str(request.log_path), "role": "candidate", "note": note},
        )

    def _start(self, request: DeployRequest, record: ServerRecord) -> None:
        serving = self.config.mlops.serving
        command = [
            sys.executable,
            "-m",
            "ai_how.serving.server",
            "--model-uri",
            request.storage_uri,
            "--name",
            request.model_name,
            "--config",
            str(request.config_path),
            "--host",
            serving.host,
            "--port",
            str(record.port),
            "--production-port",
            str(serving.port),
            "--cache-dir",
            str(self.layout.serving / "cache"),
        ]
        pidfile = Path(record.pidfile)
        start_daemon(command, pidfile=pidfile, log_path=request.log_path)
        url = self.url_of(record)
        try:
            wait_until(
                lambda: served_version(url, request.model_name) is not None,
                timeout_s=READY_TIMEOUT_S,
                what="the model server",
                alive=lambda: read_pid(pidfile) is not None,
                log_path=request.log_path,
            )
        except BaseException as exc:
            stop_daemon(pidfile)  # never leave an unrecorded server behind (Ctrl-C included)
            if not isinstance(exc, Exception):
                raise
            errors = [
                line for line in log_tail(request.log_path, 40).splitlines() if line.startswith("error:")
            ]
            if errors:
                raise DeployError(errors[-1].removeprefix("error: "), fix=f"see {request.log_path}") from None
            raise DeployError(str(exc)) from None
        reported = served_version(url, request.model_name)
        if reported != str(request.version):
            stop_daemon(pidfile)
            raise DeployError(
                f"the server at {url} reports {request.model_name} version {reported!r}, "
                f"not {request.version}: the object store holds another version under {request.storage_uri}",
                fix="re-sync this version (`ai-how pipeline run --resume RUN` after fixing the store)",
            )

    # -- promote: the candidate takes the production port, then the old server goes
    def promote(self, model_name: str, version: int) -> Deployment:
        with self._locked():
            candidate = self.candidate(model_name, version)
            if candidate is None and self._already_promoted(model_name, version):
                return Deployment(self.base_url, model_name, version, 0.0, {"resumed": "already promoted"})
            if candidate is None or not candidate.alive():
                raise DeployError(
                    f"{model_name} v{version} has no running candidate server to promote",
                    fix="deploy it again (`ai-how pipeline run --resume RUN` re-runs deploy after a failure)",
                )
            previous = self.production()
            if previous is not None and not previous.alive():
                previous = None
            taken = previous is None and http_ok(f"{self.base_url}/")
            if taken and served_version(self.base_url, model_name) == str(version):
                taken = False  # the candidate itself answers there: an earlier switch got that far
            if taken:
                raise DeployError(
                    f"{self.base_url} is already taken by a process ai-how did not start",
                    fix="stop it or change mlops.serving.port",
                )
            started = time.monotonic()
            self._switch(candidate, previous)
            with self.store.transaction(STATE_DOC) as state:
                state["production"] = vars(candidate)
                state.get("candidates", {}).pop(f"{model_name}/v{version}", None)
        details = {"pid": str(read_pid(Path(candidate.pidfile))), "log": candidate.log}
        if previous is not None:
            details["replaced"] = f"{previous.model} v{previous.version}"
        return Deployment(self.base_url, model_name, version, time.monotonic() - started, details)

    def serves(self, model_name: str, version: int) -> bool:
        candidate = self.candidate(model_name, version)
        return (candidate is not None and candidate.alive()) or self._already_promoted(model_name, version)

    def _already_promoted(self, model_name: str, version: int) -> bool:
        """A resumed promote whose switch was done before it stopped (e.g. MLflow was down for the alias)."""
        current = self.production()
        return (
            current is not None
            and (current.model, current.version) == (model_name, version)
            and current.alive()
        )

    def _switch(self, candidate: ServerRecord, previous: ServerRecord | None) -> None:
        if not signal_daemon(Path(candidate.pidfile), signal.SIGUSR1):
            raise DeployError(f"the candidate server of {candidate.model} v{candidate.version} exited")
        wanted = str(candidate.version)

        def answering() -> bool:
            # Both servers share the port until the old one stops: any answer from the new one will do.
            return any(served_version(self.base_url, candidate.model) == wanted for _ in range(4))

        try:
            wait_until(
                answering,
                timeout_s=SWITCH_TIMEOUT_S,
                what=f"{candidate.model} v{candidate.version} on {self.base_url}",
                alive=candidate.alive,
                log_path=Path(candidate.log),
            )
        except Exception as exc:
            kept = f"; {previous.model} v{previous.version} keeps serving" if previous else ""
            raise DeployError(f"the switch to the new version failed: {exc}{kept}") from None
        if previous is not None:
            stop_daemon(Path(previous.pidfile))

    # -- removal
    def discard(self, model_name: str, version: int) -> bool:
        """Stop a candidate that will not be promoted."""
        with self._locked():
            candidate = self.candidate(model_name, version)
            if candidate is None:
                return False
            stopped = stop_daemon(Path(candidate.pidfile))
            with self.store.transaction(STATE_DOC) as state:
                state.get("candidates", {}).pop(f"{model_name}/v{version}", None)
            return stopped

    def undeploy(self, model_name: str) -> bool:
        """Stop every server of ``model_name`` (production and candidates)."""
        stopped = False
        with self._locked():
            for _, record in self.servers():
                if record.model == model_name:
                    stopped = stop_daemon(Path(record.pidfile)) or stopped
            with self.store.transaction(STATE_DOC) as state:
                if (state.get("production") or {}).get("model") == model_name:
                    state["production"] = None
                candidates = state.get("candidates", {})
                for key in [k for k, c in candidates.items() if c["model"] == model_name]:
                    candidates.pop(key)
        return stopped

    def stop_all(self) -> list[str]:
        """Stop every model server ai-how started here (`stack down`); what stopped, as 'model vN'."""
        stopped = []
        with self._locked():
            for _, record in self.servers():
                if stop_daemon(Path(record.pidfile)):
                    stopped.append(f"{record.model} v{record.version}")
            self.store.write(STATE_DOC, {"production": None, "candidates": {}})
        return stopped

    def endpoint(self, model_name: str) -> str | None:
        production = self.production()
        if production is None or production.model != model_name or not production.alive():
            return None
        return self.base_url
