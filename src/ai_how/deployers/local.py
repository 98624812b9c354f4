"""Local deployer: one model-server process per model on this machine, replaced on redeploy."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ai_how.config.models import ClusterConfig
from ai_how.deployers.base import DeployError, Deployment, DeployRequest
from ai_how.layout import Layout
from ai_how.procs import http_ok, log_tail, read_pid, start_daemon, stop_daemon, wait_until

READY_TIMEOUT_S = 180.0


class LocalDeployer:
    name = "local"

    def __init__(self, config: ClusterConfig, layout: Layout) -> None:
        self.config = config
        self.layout = layout
        serving = config.mlops.serving
        self.base_url = f"http://{serving.host}:{serving.port}"

    def _pidfile(self, model_name: str) -> Path:
        return self.layout.serving / f"{model_name}.pid"

    def deploy(self, request: DeployRequest) -> Deployment:
        serving = self.config.mlops.serving
        # One server per port: replace whatever ai-how runs there (this model's previous version, or another).
        for pidfile in self.layout.serving.glob("*.pid"):
            stop_daemon(pidfile)
        if http_ok(f"{self.base_url}/"):
            raise DeployError(
                f"{self.base_url} is already taken by a process ai-how did not start",
                fix="stop it or change mlops.serving.port",
            )
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
            str(serving.port),
            "--cache-dir",
            str(self.layout.serving / "cache"),
        ]
        pidfile = self._pidfile(request.model_name)
        started = time.monotonic()
        start_daemon(command, pidfile=pidfile, log_path=request.log_path)
        ready_url = f"{self.base_url}/v2/models/{request.model_name}/ready"
        try:
            wait_until(
                lambda: http_ok(ready_url),
                timeout_s=READY_TIMEOUT_S,
                what="the model server",
                alive=lambda: read_pid(pidfile) is not None,
                log_path=request.log_path,
            )
        except Exception as exc:
            stop_daemon(pidfile)
            errors = [
                line for line in log_tail(request.log_path, 40).splitlines() if line.startswith("error:")
            ]
            if errors:
                raise DeployError(errors[-1].removeprefix("error: "), fix=f"see {request.log_path}") from None
            raise DeployError(str(exc)) from None
        (self.layout.serving / f"{request.model_name}.json").write_text(
            f'{{"version": {request.version}, "endpoint": "{self.base_url}", "uri": "{request.storage_uri}"}}\n'
        )
        return Deployment(
            self.base_url,
            request.model_name,
            request.version,
            time.monotonic() - started,
            {"pid": str(read_pid(pidfile)), "log": str(request.log_path)},
        )

    def undeploy(self, model_name: str) -> bool:
        return stop_daemon(self._pidfile(model_name))

    def endpoint(self, model_name: str) -> str | None:
        return self.base_url if read_pid(self._pidfile(model_name)) is not None else None
