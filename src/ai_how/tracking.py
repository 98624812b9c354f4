"""MLflow tracking and registry: batched metric logging, model versions, aliases (never stages)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.errors import AiHowError
from ai_how.procs import http_ok

PRODUCTION = "production"
CANDIDATE = "candidate"  # a registered version on its way to production (deployed beside it, being verified)
RUN_TAG = "ai_how.run"  # pipeline run id, on MLflow runs and model versions

# Fail fast instead of MLflow's default minutes of retries against a dead server (unless the user set them).
FAIL_FAST_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
LOGGED_MODEL_NAME = "model"  # the name of the MLflow LoggedModel of each training run
MODEL_SHA256_TAG = "ai_how.model_sha256"


def fail_fast_http() -> None:
    """Make MLflow's HTTP client give up after seconds, not minutes; call before MLflow talks to a server."""
    for key, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(key, value)


class TrackingError(AiHowError):
    pass


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: int
    run_id: str
    source: str


def logged_model_id(source: str) -> str | None:
    """The logged model id of a ``models:/<model_id>`` source; None for other sources."""
    rest = source.removeprefix("models:/")
    return rest if rest != source and rest.startswith("m-") and "/" not in rest else None


def tracking_uri_of(config: Any) -> str:
    """The tracking URI a config points at: an external server, or the local stack's."""
    mlflow = config.mlops.mlflow
    return mlflow.tracking_uri or f"http://{mlflow.host}:{mlflow.port}"


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.uri = tracking_uri
        self.experiment = experiment
        fail_fast_http()
        if tracking_uri.startswith("http") and not http_ok(f"{tracking_uri.rstrip('/')}/health", 5):
            raise TrackingError(
                f"cannot reach MLflow at {tracking_uri}",
                fix="start the local stack (`ai-how stack up -c CONFIG`) or fix mlops.mlflow.tracking_uri",
            )
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, any MLflow failure turned into one TrackingError line naming ``what``."""
        return self._call(what, fn, *args, **kwargs)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise TrackingError(
                f"MLflow {what} failed at {self.uri}: {exc.message.splitlines()[0]}"
            ) from None
        except OSError as exc:
            raise TrackingError(f"MLflow {what} failed at {self.uri}: {exc}") from None

    # -- runs
    def experiment_id(self) -> str:
        found = self._call("get experiment", self.client.get_experiment_by_name, self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(self._call("create experiment", self.client.create_experiment, self.experiment))

    def find_run(self, pipeline_run: str) -> str | None:
        runs = self._call(
            "search runs",
            self.client.search_runs,
            [self.experiment_id()],
            filter_string=f"tags.`{RUN_TAG}` = '{pipeline_run}'",
            max_results=1,
        )
        return str(runs[0].info.run_id) if runs else None

    def start_run(self, pipeline_run: str, run_name: str, tags: Mapping[str, str]) -> str:
        """The MLflow run of this pipeline run (created once; a resumed train stage reuses it)."""
        existing = self.find_run(pipeline_run)
        if existing is not None:
            return existing
        run = self._call(
            "create run",
            self.client.create_run,
            self.experiment_id(),
            run_name=run_name,
            tags={RUN_TAG: pipeline_run, **tags},
        )
        return str(run.info.run_id)

    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Sequence[float]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Log params, tags and whole metric histories in batches (MLflow limits: 1000 metrics, 100 params)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_rows = [
            Metric(key, float(value), now, step)
            for key, values in (metrics or {}).items()
            for step, value in enumerate(values)
        ]
        param_rows = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        calls = 0
        while metric_rows or param_rows or tag_rows:
            chunk_m, metric_rows = metric_rows[:1000], metric_rows[1000:]
            chunk_p, param_rows = param_rows[:100], param_rows[100:]
            chunk_t, tag_rows = tag_rows[:100], tag_rows[100:]
            self._call(
                "log batch", self.client.log_batch, run_id, metrics=chunk_m, params=chunk_p, tags=chunk_t
            )
            calls += 1
        return calls

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("finish run", self.client.set_terminated, run_id, status)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self._call("get run", self.client.get_run, run_id).data.metrics)

    # -- registry
    def log_model_dir(self, run_id: str, local_dir: Path, artifact_path: str = "model") -> str:
        """Upload a directory as plain run artifacts (not an MLflow Model); returns its artifact URI."""
        self._call("artifact upload", self.client.log_artifacts, run_id, str(local_dir), artifact_path)
        run = self._call("get run", self.client.get_run, run_id)
        return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"

    def log_model(self, run_id: str, model_dir: Path, kind: str) -> str:
        """Log a training output as an MLflow Model of ``run_id``; returns the ``models:/<model_id>`` to register.

        ``kind`` is "classifier" (digits CNN → pyfunc) or "llm" (HF directory → transformers flavour).
        Logging the same files again for the same run returns the model already logged.
        """
        from ai_how import mlflow_models
        from ai_how.objectstore.manifest import Manifest

        if kind not in mlflow_models.KINDS:
            raise TrackingError(
                f"unknown model kind {kind!r}", fix=f"use one of: {', '.join(mlflow_models.KINDS)}"
            )
        if not model_dir.is_dir():
            raise TrackingError(
                f"model directory {model_dir} does not exist", fix="run the train stage first"
            )
        digest = Manifest.of_directory(model_dir).digest
        run = self._call("get run", self.client.get_run, run_id)
        experiment_id = str(run.info.experiment_id)
        existing = self._logged_model(experiment_id, run_id, digest)
        if existing is not None:
            return f"models:/{existing}"
        logged = self._call(
            "create logged model",
            self.client.create_logged_model,
            experiment_id,
            name=LOGGED_MODEL_NAME,
            source_run_id=run_id,
            tags={"ai_how.kind": kind, MODEL_SHA256_TAG: digest},
            params=dict(run.data.params),  # as mlflow's own log_model does: the run's params
            model_type=kind,
        )
        try:
            self._upload_model(logged, run_id, model_dir, kind, digest)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.finalize_logged_model(logged.model_id, "FAILED")
            raise
        return f"models:/{logged.model_id}"

    def _logged_model(self, experiment_id: str, run_id: str, digest: str) -> str | None:
        """The READY logged model of ``run_id`` holding exactly these files, if one was logged before."""
        found = self._call(
            "search logged models",
            self.client.search_logged_models,
            [experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND tags.`{MODEL_SHA256_TAG}` = '{digest}'",
        )
        ready = [m for m in found if m.status == "READY"]  # LoggedModelStatus is a str enum
        return str(ready[0].model_id) if ready else None

    def _upload_model(self, logged: Any, run_id: str, model_dir: Path, kind: str, digest: str) -> None:
        """Save the MLflow Model locally, upload it to the logged model, link it to the run, mark it READY."""
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import Model

        from ai_how import mlflow_models

        mlflow_model = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="ai-how-mlflow-model-") as tmp:
            local = Path(tmp) / "model"
            self._call("save model", mlflow_models.save, kind, model_dir, local, mlflow_model, digest)
            self._call("model upload", self.client.log_model_artifacts, logged.model_id, str(local))
        self._call("link model", self.client.log_outputs, run_id, [LoggedModelOutput(logged.model_id, 0)])
        self._call("finalize model", self.client.finalize_logged_model, logged.model_id, "READY")

    def register(
        self, name: str, run_id: str, source: str, tags: Mapping[str, str], description: str
    ) -> ModelVersionRef:
        """Create the model version of ``source`` for ``run_id`` once; a retry returns the existing one.

        A ``models:/<model_id>`` source (from :meth:`log_model`) links the version to that logged model.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self._call(
                "create registered model",
                self.client.create_registered_model,
                name,
                description="Registered by ai-how",
            )
        found = self._call(
            "search versions", self.client.search_model_versions, f"name='{name}' and run_id='{run_id}'"
        )
        same = [v for v in found if v.source == source]
        if same:
            version = max(same, key=lambda v: int(v.version))
        else:
            version = self._call(
                "create model version",
                self.client.create_model_version,
                name,
                source,
                run_id=run_id,
                tags=dict(tags),
                description=description,
                model_id=logged_model_id(source),
            )
        return ModelVersionRef(name, int(version.version), run_id, str(version.source))

    def set_version_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._call("tag version", self.client.set_model_version_tag, name, str(version), key, str(value))

    def version_run_id(self, name: str, version: int) -> str:
        run_id = self._call("get version", self.client.get_model_version, name, str(version)).run_id
        if not run_id:
            raise TrackingError(f"{name} v{version} is not linked to an MLflow run")
        return str(run_id)

    def download_uri(self, name: str, version: int) -> str:
        """Where the registry keeps the version's files (an artifact URI ``download_artifacts`` takes)."""
        return str(
            self._call("get download uri", self.client.get_model_version_download_uri, name, str(version))
        )

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self._call("get version", self.client.get_model_version, name, str(version)).tags)

    def alias_version(self, name: str, alias: str = PRODUCTION) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, version: int, alias: str = PRODUCTION) -> None:
        self._call("set alias", self.client.set_registered_model_alias, name, alias, str(version))

    def versions(self, name: str) -> list[int]:
        found = self._call("search versions", self.client.search_model_versions, f"name='{name}'")
        return sorted(int(v.version) for v in found)
