"""Local deployer: model servers on this machine, a new version beside the old one until it is promoted.

One production server answers on ``mlops.serving.port`` for every model in production (each under its
own name, with its own version). ``deploy`` starts a new version of model M as a *candidate* on a free
loopback port: M from its new URI plus every other model production serves, from its production URI,
so the candidate can take over the whole port while only M changes (it verifies M's version). ``promote``
makes the candidate listen on the production port too (SIGUSR1; both share it through SO_REUSEPORT),
waits until the production port answers with M's new version, and only then stops the previous server:
no gap, no window in which an unverified version serves production, and the other models answer
throughout. A candidate started beside another production than today's (a model was promoted or
undeployed since) is started again beside today's before it switches. ``undeploy`` of one model among
several switches the same way to a server started without it.

What runs is recorded in the state store (document ``serving/local``): the production server and the
candidates, each with every model it serves (``models``: name -> version and URI; a record written
before several models were served names its one model). Every deploy, promote and undeploy holds the
``deploy/local`` lock, so two ai-how processes never start or switch servers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
DRAIN_S = 1.0  # how long a replaced server answers with `Connection: close` before it stops
STATE_DOC = "serving/local"
LOCK = "deploy/local"


def served_version(base_url: str, model_name: str, timeout_s: float = 2.0) -> str | None:
    """The version of ``model_name`` a server reports (response header), or None when it does not serve it."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{base_url}/v2/models/{model_name}/ready")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            header = response.headers.get(VERSION_HEADER)
            return str(header) if header is not None else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def ready_status(base_url: str, model_name: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status a server answers for ``model_name``'s readiness (404: it does not serve it);
    None when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"{base_url}/v2/models/{model_name}/ready", timeout=timeout_s
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class ServedModel:
    """One model a server serves: its version and the object-store URI it was fetched from."""

    version: int
    uri: str  # '' in a record from before several models were served (its pid file has it)


def describe(models: dict[str, ServedModel]) -> str:
    """'digits v3, llm v2'."""
    return ", ".join(f"{name} v{served.version}" for name, served in models.items())


@dataclass(frozen=True)
class ServerRecord:
    """One model-server process ai-how started, for ``model`` v``version`` (a candidate's new version)."""

    model: str
    version: int
    port: int
    pidfile: str
    log: str
    models: dict[str, ServedModel]  # every model it serves, ``model`` first
    config: str | None = None  # the cluster config it was started with (object-store credentials)

    @classmethod
    def of(cls, data: dict[str, Any]) -> ServerRecord:
        version = int(data["version"])
        models = {
            name: ServedModel(int(served["version"]), str(served.get("uri") or ""))
            for name, served in (data.get("models") or {}).items()
        }
        return cls(
            data["model"],
            version,
            int(data["port"]),
            data["pidfile"],
            data["log"],
            models or {data["model"]: ServedModel(version, "")},  # an older record: the one model it names
            data.get("config"),
        )

    def to_json(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "models"}
        return {**fields, "models": {name: vars(served) for name, served in self.models.items()}}

    def others(self, model_name: str) -> dict[str, ServedModel]:
        """The models it serves besides ``model_name``."""
        return {name: served for name, served in self.models.items() if name != model_name}

    def alive(self) -> bool:
        return read_pid(Path(self.pidfile)) is not None


def _versions(models: dict[str, ServedModel]) -> dict[str, int]:
    return {name: served.version for name, served in models.items()}


def _started_with(pidfile: Path) -> dict[str, str]:
    """The flags a server was started with (each flag -> the word after it), as its pid file records them."""
    try:
        argv = shlex.split(json.loads(pidfile.read_text())["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return dict(itertools.pairwise(argv))


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

    def _publish(self) -> None:
        """Tell the embedded Prometheus which servers run (its file_sd targets), when monitoring is on."""
        if not self.config.monitoring.prometheus.enabled:
            return
        from ai_how.monitoring.embedded import publish_model_servers

        port = self.config.mlops.serving.port
        servers = [
            (
                role,
                record.model,
                f"{self.host}:{port if role == 'production' else record.port}",
                record.version,
            )
            for role, record in self._processes()
        ]
        publish_model_servers(self.layout, servers)

    def production(self) -> ServerRecord | None:
        """The production server's record (one process, every model in production)."""
        record = self._state().get("production")
        return ServerRecord.of(record) if record else None

    def _live_production(self) -> ServerRecord | None:
        production = self.production()
        return production if production is not None and production.alive() else None

    def candidate(self, model_name: str, version: int) -> ServerRecord | None:
        record = self._state().get("candidates", {}).get(f"{model_name}/v{version}")
        return ServerRecord.of(record) if record else None

    def _processes(self) -> list[tuple[str, ServerRecord]]:
        state = self._state()
        found = [("production", ServerRecord.of(state["production"]))] if state.get("production") else []
        return found + [("candidate", ServerRecord.of(c)) for c in state.get("candidates", {}).values()]

    def servers(self) -> list[tuple[str, ServerRecord]]:
        """Every server ai-how started here, as (role, record): role 'production' or 'candidate'.

        The production server is listed once per model it serves (``model``/``version`` naming it)."""
        found: list[tuple[str, ServerRecord]] = []
        for role, record in self._processes():
            if role == "production":
                found += [
                    (role, dataclasses.replace(record, model=name, version=served.version))
                    for name, served in record.models.items()
                ]
            else:
                found.append((role, record))
        return found

    def url_of(self, record: ServerRecord) -> str:
        return f"http://{self.host}:{record.port}"

    def _production_others(self, production: ServerRecord | None, model_name: str) -> dict[str, ServedModel]:
        """The models ``production`` serves besides ``model_name``, each with its URI (a record from an older
        ai-how, which names one model and no URI: from the flags in its server's pid file)."""
        if production is None:
            return {}
        others = production.others(model_name)
        unknown = [name for name, served in others.items() if not served.uri]
        if not unknown:
            return others
        flags = _started_with(Path(production.pidfile))
        uri = flags.get("--model-uri")
        if unknown != [flags.get("--name")] or not uri:
            raise DeployError(
                f"production serves {describe(others)} from a server that did not record its model URI",
                fix=f"deploy and promote {unknown[0]} again, or stop it first (`ai-how stack down`)",
            )
        return {**others, unknown[0]: ServedModel(others[unknown[0]].version, uri)}

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
            production = self._live_production()
            others = self._production_others(production, request.model_name)
            pidfile = self.layout.serving / f"{request.model_name}-v{request.version}.pid"
            record = ServerRecord(
                request.model_name,
                request.version,
                free_port(self.host),
                str(pidfile),
                str(request.log_path),
                {request.model_name: ServedModel(request.version, request.storage_uri), **others},
                str(request.config_path),
            )
            started = time.monotonic()
            self._start(record, verify=[request.model_name])
            with self.store.transaction(STATE_DOC) as state:
                state.setdefault("candidates", {})[f"{request.model_name}/v{request.version}"] = (
                    record.to_json()
                )
            self._publish()
        if production is not None:
            keeps = "keeps" if len(production.models) == 1 else "keep"
            note = f"{describe(production.models)} {keeps} serving {self.base_url} until promoted"
            if others:
                note += f" (the candidate serves {describe(others)} as well, from the same URIs)"
        else:
            note = f"nothing serves {self.base_url} yet"
        return Deployment(
            self.url_of(record),
            request.model_name,
            request.version,
            time.monotonic() - started,
            {"pid": str(read_pid(pidfile)), "log": str(request.log_path), "role": "candidate", "note": note},
        )

    def _start(self, record: ServerRecord, verify: Iterable[str]) -> None:
        """Start the server ``record`` describes, wait until it answers, and check the versions of ``verify``."""
        serving = self.config.mlops.serving
        command = [
            sys.executable,
            "-m",
            "ai_how.serving.server",
            "--model-uri",
            record.models[record.model].uri,
            "--name",
            record.model,
        ]
        for name, served in record.others(record.model).items():
            command += ["--model", f"{name}={served.uri}"]
        if record.config is not None:
            command += ["--config", record.config]
        command += [
            "--host",
            serving.host,
            "--port",
            str(record.port),
            "--production-port",
            str(serving.port),
            "--cache-dir",
            str(self.layout.serving / "cache"),
            "--device",
            serving.device,
            "--http-workers",
            str(serving.http_workers),
        ]
        if serving.kv_cache_gb is not None:
            command += ["--kv-cache-gb", f"{serving.kv_cache_gb:g}"]
        pidfile, log_path = Path(record.pidfile), Path(record.log)
        start_daemon(command, pidfile=pidfile, log_path=log_path)
        url = self.url_of(record)
        try:
            wait_until(
                lambda: served_version(url, record.model) is not None,
                timeout_s=READY_TIMEOUT_S,
                what="the model server",
                alive=lambda: read_pid(pidfile) is not None,
                log_path=log_path,
            )
        except BaseException as exc:
            stop_daemon(pidfile)  # never leave an unrecorded server behind (Ctrl-C included)
            if not isinstance(exc, Exception):
                raise
            errors = [line for line in log_tail(log_path, 40).splitlines() if line.startswith("error:")]
            if errors:
                raise DeployError(errors[-1].removeprefix("error: "), fix=f"see {log_path}") from None
            raise DeployError(str(exc)) from None
        for name in verify:
            reported, served = served_version(url, name), record.models[name]
            if reported != str(served.version):
                stop_daemon(pidfile)
                raise DeployError(
                    f"the server at {url} reports {name} version {reported!r}, "
                    f"not {served.version}: the object store holds another version under {served.uri}",
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
            previous = self._live_production()
            taken = previous is None and http_ok(f"{self.base_url}/")
            if taken and served_version(self.base_url, model_name) == str(version):
                taken = False  # the candidate itself answers there: an earlier switch got that far
            if taken:
                raise DeployError(
                    f"{self.base_url} is already taken by a process ai-how did not start",
                    fix="stop it or change mlops.serving.port",
                )
            started = time.monotonic()
            others = self._production_others(previous, model_name)
            if _versions(candidate.others(model_name)) != _versions(others):
                candidate = self._restart_beside(candidate, others)
            wanted = str(version)
            self._switch(
                candidate,
                previous,
                arrived=lambda: served_version(self.base_url, model_name) == wanted,
                change="the new version",
            )
            with self.store.transaction(STATE_DOC) as state:
                state["production"] = candidate.to_json()
                state.get("candidates", {}).pop(f"{model_name}/v{version}", None)
            self._publish()
        details = {
            "pid": str(read_pid(Path(candidate.pidfile))),
            "log": candidate.log,
            "serves": describe(candidate.models),
        }
        replaced = previous.models.get(model_name) if previous is not None else None
        if replaced is not None:
            details["replaced"] = f"{model_name} v{replaced.version}"
        return Deployment(self.base_url, model_name, version, time.monotonic() - started, details)

    def _restart_beside(self, candidate: ServerRecord, others: dict[str, ServedModel]) -> ServerRecord:
        """Start ``candidate`` again with today's other production models (it was started beside other
        versions: promoting it as it is would bring those back)."""
        key = f"{candidate.model}/v{candidate.version}"
        stop_daemon(Path(candidate.pidfile))
        with self.store.transaction(STATE_DOC) as state:
            state.get("candidates", {}).pop(key, None)
        fresh = dataclasses.replace(
            candidate,
            port=free_port(self.host),
            models={candidate.model: candidate.models[candidate.model], **others},
        )
        self._start(fresh, verify=[candidate.model])
        with self.store.transaction(STATE_DOC) as state:
            state.setdefault("candidates", {})[key] = fresh.to_json()
        return fresh

    def serves(self, model_name: str, version: int) -> bool:
        candidate = self.candidate(model_name, version)
        return (candidate is not None and candidate.alive()) or self._already_promoted(model_name, version)

    def _already_promoted(self, model_name: str, version: int) -> bool:
        """A resumed promote whose switch was done before it stopped (e.g. MLflow was down for the alias)."""
        current = self.production()
        if current is None:
            return False
        served = current.models.get(model_name)
        return served is not None and served.version == version and current.alive()

    def _switch(
        self,
        new: ServerRecord,
        previous: ServerRecord | None,
        *,
        arrived: Callable[[], bool],
        change: str,
    ) -> None:
        """``new`` listens on the production port too; once ``arrived`` (true only of its answers) holds,
        ``previous`` stops."""
        if not signal_daemon(Path(new.pidfile), signal.SIGUSR1):
            raise DeployError(f"the candidate server of {new.model} v{new.version} exited")

        def answering() -> bool:
            # Both servers share the port until the old one stops: any answer from the new one will do.
            return any(arrived() for _ in range(4))

        try:
            wait_until(
                answering,
                timeout_s=SWITCH_TIMEOUT_S,
                what=f"{describe(new.models)} on {self.base_url}",
                alive=new.alive,
                log_path=Path(new.log),
            )
        except Exception as exc:
            kept = ""
            if previous is not None:
                kept = f"; {describe(previous.models)} {'keeps' if len(previous.models) == 1 else 'keep'} serving"
            raise DeployError(f"the switch to {change} failed: {exc}{kept}") from None
        if previous is not None:
            # The previous server hands its clients over before it stops (serving/draining.py).
            if signal_daemon(Path(previous.pidfile), signal.SIGUSR2):
                time.sleep(DRAIN_S)
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
            self._publish()
            return stopped

    def undeploy(self, model_name: str) -> bool:
        """Stop serving ``model_name``: its candidates stop; a production server that serves other models
        too is replaced (the same gap-free switch as promote) by one without it, else it stops."""
        stopped = False
        with self._locked():
            for role, record in self._processes():
                if role == "candidate" and record.model == model_name:
                    stopped = stop_daemon(Path(record.pidfile)) or stopped
            production = self.production()
            serving = production is not None and model_name in production.models
            replacement = None
            if production is not None and serving:
                rest = self._production_others(self._live_production(), model_name)
                if rest:
                    replacement = self._replace_production(production, rest, model_name)
                stopped = stop_daemon(Path(production.pidfile)) or replacement is not None or stopped
            with self.store.transaction(STATE_DOC) as state:
                if serving:
                    state["production"] = replacement.to_json() if replacement is not None else None
                candidates = state.get("candidates", {})
                for key in [k for k, c in candidates.items() if c["model"] == model_name]:
                    candidates.pop(key)
            self._publish()
        return stopped

    def _replace_production(
        self, production: ServerRecord, rest: dict[str, ServedModel], removed: str
    ) -> ServerRecord:
        """Start a server of ``rest`` (production without ``removed``) and switch the production port to it."""
        stem = self.layout.serving / f"production-{secrets.token_hex(4)}"
        first = production.model if production.model in rest else next(iter(rest))
        replacement = ServerRecord(
            first,
            rest[first].version,
            free_port(self.host),
            f"{stem}.pid",
            f"{stem}.log",
            {first: rest[first], **rest},
            production.config,
        )
        self._start(replacement, verify=list(rest))
        try:
            self._switch(
                replacement,
                production,
                arrived=lambda: ready_status(self.base_url, removed) == 404,
                change=f"a server without {removed}",
            )
        except BaseException:
            stop_daemon(Path(replacement.pidfile))  # never leave an unrecorded server behind
            raise
        return replacement

    def stop_all(self) -> list[str]:
        """Stop every model server ai-how started here (`stack down`); what stopped, as 'model vN'."""
        stopped: list[str] = []
        with self._locked():
            for role, record in self._processes():
                if stop_daemon(Path(record.pidfile)):
                    served = (
                        record.models if role == "production" else {record.model: record.models[record.model]}
                    )
                    stopped += [f"{name} v{m.version}" for name, m in served.items()]
            self.store.write(STATE_DOC, {"production": None, "candidates": {}})
            self._publish()
        return stopped

    def endpoint(self, model_name: str) -> str | None:
        """The production port when production serves ``model_name`` (beside any other models)."""
        production = self.production()
        if production is None or model_name not in production.models or not production.alive():
            return None
        return self.base_url
