"""The local MLOps stack: real MLflow (SQLite or PostgreSQL backend, proxied artifacts) and an S3 endpoint."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

from ai_how.config.models import ClusterConfig
from ai_how.deployers.local import LocalDeployer
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.procs import http_ok, http_post, port_open, read_pid, start_daemon, stop_daemon, wait_until
from ai_how.redact import redact, register_secret_names, secret_env_names
from ai_how.state.store import StateStore

STACK_LOCK = "stack"  # StateStore lock held while `stack up`/`down` start or stop services


@dataclass
class Service:
    name: str
    command: list[str]
    url: str
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 120.0
    note: str = ""
    reload_url: str = ""  # POSTed when `stack up` finds the service running (a new configuration)
    describe: Callable[[], str] | None = None  # what `stack status` says of it while healthy


@dataclass
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool
    managed: bool  # started by ai-how (False: an external endpoint from the config)
    note: str = ""


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def backend_store_uri(config: ClusterConfig, layout: Layout) -> str:
    """MLflow's backend store URI. It never holds a password: see ``backend_store_env``."""
    mlflow, pg = config.mlops.mlflow, config.mlops.postgresql
    if mlflow.backend_store.type == "sqlite":
        path = (
            Path(mlflow.backend_store.path).expanduser()
            if mlflow.backend_store.path
            else layout.mlflow / "mlflow.db"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    # psycopg2 explicitly: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which is not installed.
    return f"postgresql+psycopg2://{quote(pg.username, safe='')}@{pg.host}:{pg.port}/{quote(pg.database)}"


def backend_store_env(config: ClusterConfig) -> dict[str, str]:
    """The PostgreSQL password as libpq's PGPASSWORD, so it is in no command line (``ps``), log or file."""
    if config.mlops.mlflow.backend_store.type == "sqlite":
        return {}
    pg = config.mlops.postgresql
    password = os.environ.get(pg.password_env)
    if password is None:
        raise AiHowError(
            f"MLflow's PostgreSQL password variable {pg.password_env} is not set",
            fix=f"export {pg.password_env}=... (the password of role {pg.username})",
        )
    return {"PGPASSWORD": password}


def _s3_env(config: ClusterConfig) -> dict[str, str]:
    store = config.mlops.object_store
    env = {"AWS_DEFAULT_REGION": store.region}
    for target, source in (
        ("AWS_ACCESS_KEY_ID", store.credentials.access_key_id_env),
        ("AWS_SECRET_ACCESS_KEY", store.credentials.secret_access_key_env),
    ):
        if os.environ.get(source):
            env[target] = os.environ[source]
    if store.endpoint:
        env["MLFLOW_S3_ENDPOINT_URL"] = store.endpoint
    return env


def services(config: ClusterConfig, layout: Layout) -> list[Service]:
    """The services this config runs on this machine, with their commands and environments."""
    register_secret_names(secret_env_names(config))  # their values are masked in every log line
    found: list[Service] = []
    store = config.mlops.object_store
    if store.serve_local and store.endpoint:
        endpoint = urlparse(store.endpoint)
        found.append(
            Service(
                "s3",
                [_bin("moto_server"), "-H", endpoint.hostname or "127.0.0.1", "-p", str(endpoint.port or 80)],
                store.endpoint,
                store.endpoint.rstrip("/") + "/moto-api/",
                start_timeout_s=30,
                note="moto keeps objects in memory: they are lost on `stack down`",
            )
        )
    mlflow = config.mlops.mlflow
    if mlflow.enabled and mlflow.tracking_uri is None:
        url = f"http://{mlflow.host}:{mlflow.port}"
        if mlflow.artifact_store.type == "object_store":
            if store.backend != "s3":
                raise AiHowError(
                    "mlflow.artifact_store.type object_store needs object_store.backend: s3",
                    fix="set mlops.object_store.backend: s3, or artifact_store.type: local",
                )
            destination, env = f"s3://{store.buckets.artifacts}", _s3_env(config)
        else:
            destination, env = str(layout.mlflow / "artifacts"), {}
        found.append(
            Service(
                "mlflow",
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--host",
                    mlflow.host,
                    "--port",
                    str(mlflow.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    backend_store_uri(config, layout),
                    "--artifacts-destination",
                    destination,
                    "--serve-artifacts",
                    *(
                        ["--expose-prometheus", str(layout.mlflow / "prometheus")]
                        if config.monitoring.prometheus.enabled
                        else []
                    ),
                ],
                url,
                f"{url}/health",
                env=env | backend_store_env(config),
            )
        )
    from ai_how.monitoring import embedded  # Prometheus, Alertmanager, exporters (when enabled)

    return found + embedded.services(config, layout)


def _alive(pidfile: Path) -> bool:
    return read_pid(pidfile) is not None


def _status(service: Service, layout: Layout) -> ServiceStatus:
    pid = read_pid(layout.stack / f"{service.name}.pid")
    healthy = pid is not None and http_ok(service.health_url)
    note = service.describe() if healthy and service.describe is not None else service.note
    return ServiceStatus(service.name, redact(service.url), pid, healthy, True, note)


def up(config: ClusterConfig, layout: Layout) -> list[ServiceStatus]:
    """Start every configured service that is not running; wait until each is healthy.

    Holds the stack lock throughout, so a concurrent `stack up` waits and then finds them running.
    """
    with StateStore(layout.root).lock(STACK_LOCK):
        return _up_locked(config, layout)


def _up_locked(config: ClusterConfig, layout: Layout) -> list[ServiceStatus]:
    result = []
    if config.monitoring.prometheus.enabled:
        from ai_how.monitoring import embedded

        embedded.prepare(config, layout)  # the configuration this start (or reload) loads
    for service in services(config, layout):
        pidfile, log = layout.stack / f"{service.name}.pid", layout.stack / f"{service.name}.log"
        endpoint = urlparse(service.url)
        if read_pid(pidfile) is None:
            if port_open(endpoint.hostname or "127.0.0.1", endpoint.port or 80):
                raise AiHowError(
                    f"{service.name}: {service.url} is already taken by a process ai-how did not start",
                    fix="stop that process or change the port in the config",
                )
            start_daemon(service.command, pidfile=pidfile, log_path=log, env=os.environ | service.env)
        elif service.reload_url:
            http_post(service.reload_url)  # running already: load the configuration just rendered
        wait_until(
            functools.partial(http_ok, service.health_url),
            timeout_s=service.start_timeout_s,
            what=f"{service.name} ({service.url})",
            alive=functools.partial(_alive, pidfile),
            log_path=log,
        )
        result.append(_status(service, layout))
    return result


def ensure_up(config: ClusterConfig, layout: Layout) -> None:
    """`up`, but only when a configured local service is not healthy (cheap when all are)."""
    if not all(_status(s, layout).healthy for s in services(config, layout)):
        up(config, layout)


def down(config: ClusterConfig, layout: Layout) -> list[str]:
    """Stop the services and local model servers ai-how started (data on disk is kept); returns what stopped."""
    with StateStore(layout.root).lock(STACK_LOCK):
        stopped = [f"model-server {name}" for name in LocalDeployer(config, layout).stop_all()]
        names = {s.name for s in services(config, layout)} | {p.stem for p in layout.stack.glob("*.pid")}
        for name in sorted(names):
            if stop_daemon(layout.stack / f"{name}.pid"):
                stopped.append(name)
    return stopped


def status(config: ClusterConfig, layout: Layout) -> list[ServiceStatus]:
    result = [_status(s, layout) for s in services(config, layout)]
    deployer = LocalDeployer(config, layout)
    for role, server in deployer.servers():
        url = deployer.url_of(server) if role == "candidate" else deployer.base_url
        pid = read_pid(Path(server.pidfile))
        result.append(
            ServiceStatus(
                f"model-server {server.model} v{server.version}",
                url,
                pid,
                pid is not None and http_ok(f"{url}/v2/health/ready"),
                True,
                role,
            )
        )
    mlflow = config.mlops.mlflow
    if mlflow.enabled and mlflow.tracking_uri is not None:
        result.append(
            ServiceStatus(
                "mlflow",
                redact(mlflow.tracking_uri),  # an external URI may carry user:password@
                None,
                http_ok(mlflow.tracking_uri.rstrip("/") + "/health"),
                False,
                "external",
            )
        )
    return result
