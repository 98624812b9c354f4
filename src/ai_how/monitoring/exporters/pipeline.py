"""``ai-how exporter pipeline``: pipeline runs, stages, syncs, production versions and training progress.

Everything is read from the one state store at scrape time: the run documents ``runs/<id>`` that
``pipeline/runner.py`` writes (stage status, times, outputs), the ``state`` document's rollbacks and
registry deploys, and, for a run whose train stage is running, the last line of the job's
``progress.jsonl`` on the shared storage. No MLflow, no torch.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ai_how.errors import AiHowError
from ai_how.monitoring.exporters.training import TrainingOutputs, training_metrics
from ai_how.state.store import StateStore

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "stopped", "interrupted")
STAGE_STATUSES = ("pending", "running", "succeeded", "failed", "interrupted")
# Stages take seconds (register) to hours (train): buckets from 1 s to 4 h.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)


def timestamp(text: Any) -> float | None:
    """Epoch seconds of the runner's ISO times (``2026-01-02T03:04:05+00:00``) or a rollback's ``20260102-030405``."""
    if not isinstance(text, str) or not text:
        return None
    for parse in (
        datetime.fromisoformat,
        lambda t: datetime.strptime(t, "%Y%m%d-%H%M%S").replace(tzinfo=UTC),
    ):
        try:
            moment = parse(text)
        except ValueError:
            continue
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


def read_runs(store: StateStore) -> tuple[list[dict[str, Any]], int]:
    """Every run document, and how many could not be read (a corrupt one does not hide the others)."""
    runs, unreadable = [], 0
    for name in store.names("runs"):
        try:
            doc = store.read(name)
        except AiHowError:
            unreadable += 1
            continue
        if isinstance(doc.get("stages"), dict):
            runs.append(doc)
    return runs, unreadable


def _model(doc: dict[str, Any]) -> str:
    return str(doc.get("model_name") or "unknown")


def _stages(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for stage, record in doc["stages"].items():
        if isinstance(record, dict):
            yield str(stage), record


def run_metrics(runs: list[dict[str, Any]]) -> Iterator[Metric]:
    """Runs and stages by status, stage durations and failures, last success per model."""
    statuses = Counter(str(doc.get("status", "pending")) for doc in runs)
    family = GaugeMetricFamily("ai_how_pipeline_runs", "Pipeline runs by status", labels=["status"])
    for status in sorted(set(RUN_STATUSES) | set(statuses)):
        family.add_metric([status], statuses[status])
    yield family

    stages: Counter[tuple[str, str]] = Counter()
    failures: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    for doc in runs:
        for stage, record in _stages(doc):
            status = str(record.get("status", "pending"))
            stages[stage, status] += 1
            failures[stage] += status == "failed"
            if status in ("succeeded", "failed") and isinstance(record.get("duration_s"), int | float):
                durations[stage].append(float(record["duration_s"]))
    names = sorted({stage for stage, _ in stages})
    family = GaugeMetricFamily(
        "ai_how_pipeline_stages", "Stages of all runs by their latest status", labels=["stage", "status"]
    )
    for stage in names:
        for status in sorted(set(STAGE_STATUSES) | {s for n, s in stages if n == stage}):
            family.add_metric([stage, status], stages[stage, status])
    yield family

    counter = CounterMetricFamily(
        "ai_how_pipeline_stage_failures",
        "Stages whose latest attempt failed, over all runs",
        labels=["stage"],
    )
    for stage in names:
        counter.add_metric([stage], failures[stage])
    yield counter

    histogram = HistogramMetricFamily(
        "ai_how_pipeline_stage_duration_seconds", "Duration of finished stages", labels=["stage"]
    )
    for stage in names:
        values = durations.get(stage, [])
        buckets = [(repr(bound), sum(v <= bound for v in values)) for bound in DURATION_BUCKETS]
        histogram.add_metric([stage], [*buckets, ("+Inf", len(values))], sum_value=sum(values))
    yield histogram

    last: dict[str, float] = {}
    for doc in runs:
        when = timestamp(doc.get("updated"))
        if doc.get("status") == "succeeded" and when is not None:
            last[_model(doc)] = max(when, last.get(_model(doc), 0.0))
    gauge = GaugeMetricFamily(
        "ai_how_pipeline_last_success_timestamp_seconds",
        "When the model's last pipeline run succeeded (Unix time)",
        labels=["model"],
    )
    for model in sorted(last):
        gauge.add_metric([model], last[model])
    yield gauge


def production_versions(runs: list[dict[str, Any]], state: dict[str, Any]) -> dict[str, int]:
    """The version each model serves in production: the latest of promote stages, rollbacks and
    registry deploys, by time."""
    events: list[tuple[float, str, int]] = []
    for doc in runs:
        promote = doc["stages"].get("promote", {})
        outputs = promote.get("outputs", {}) if isinstance(promote, dict) else {}
        when = timestamp(promote.get("finished")) if isinstance(promote, dict) else None
        if promote.get("status") == "succeeded" and when is not None and "version" in outputs:
            events.append((when, str(outputs.get("model_name") or _model(doc)), int(outputs["version"])))
    for rollback in state.get("rollbacks", []):
        when = timestamp(rollback.get("at"))
        if when is not None and "model" in rollback and "to" in rollback:
            events.append((when, str(rollback["model"]), int(rollback["to"])))
    for deploy in state.get("deploys", []):
        when = timestamp(deploy.get("at"))
        if when is not None and "model" in deploy and "version" in deploy:
            events.append((when, str(deploy["model"]), int(deploy["version"])))
    return {model: version for _, model, version in sorted(events)}


def model_metrics(runs: list[dict[str, Any]], state: dict[str, Any]) -> Iterator[Metric]:
    """Production version and object-store syncs per model."""
    gauge = GaugeMetricFamily(
        "ai_how_model_production_version", "The model version serving production", labels=["model"]
    )
    for model, version in sorted(production_versions(runs, state).items()):
        gauge.add_metric([model], version)
    yield gauge

    synced_bytes: Counter[str] = Counter()
    synced_files: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    models = set()
    for doc in runs:
        sync = doc["stages"].get("sync", {})
        if not isinstance(sync, dict) or sync.get("status", "pending") == "pending":
            continue
        model = _model(doc)
        models.add(model)
        outputs = sync.get("outputs") or {}
        if sync.get("status") == "succeeded":
            synced_bytes[model] += int(outputs.get("bytes_uploaded", 0))
            synced_files[model] += len(outputs.get("uploaded", []))
        failed[model] += sync.get("status") == "failed"
    for name, documentation, values in (
        ("ai_how_sync_bytes", "Bytes uploaded to the object store by pipeline syncs", synced_bytes),
        ("ai_how_sync_files", "Files uploaded to the object store by pipeline syncs", synced_files),
        ("ai_how_sync_failures", "Pipeline sync stages that failed", failed),
    ):
        counter = CounterMetricFamily(name, documentation, labels=["model"])
        for model in sorted(models):
            counter.add_metric([model], values[model])
        yield counter


class PipelineCollector(Collector):
    """Reads the state store on every scrape; never raises (``ai_how_pipeline_exporter_scrape_error 1``)."""

    def __init__(self, store: StateStore, outputs: TrainingOutputs) -> None:
        self.store, self.outputs = store, outputs
        self.last_error = ""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        families: list[Metric] = []
        error = 0
        try:
            runs, unreadable = read_runs(self.store)
            state = self.store.read("state")
            families += [
                *run_metrics(runs),
                *model_metrics(runs, state),
                *training_metrics(runs, self.outputs),
            ]
            families.append(
                GaugeMetricFamily(
                    "ai_how_pipeline_unreadable_runs",
                    "Run documents that could not be read",
                    value=unreadable,
                )
            )
            self.last_error = ""
        except (AiHowError, OSError, ValueError, TypeError, KeyError) as exc:
            error = 1
            message = exc.message if isinstance(exc, AiHowError) else f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                print(
                    f"pipeline exporter: cannot read {self.store.root}: {message}",
                    file=sys.stderr,
                    flush=True,
                )
            self.last_error = message
            families = []
        yield from families
        yield GaugeMetricFamily(
            "ai_how_pipeline_exporter_scrape_error", "1 when the last read of the state failed", value=error
        )
        yield GaugeMetricFamily(
            "ai_how_pipeline_exporter_scrape_duration_seconds",
            "Seconds the last read of the state took",
            value=time.monotonic() - started,
        )


def pipeline_registry(state_dir: Path, config_path: Path | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(StateStore(state_dir), TrainingOutputs(state_dir, config_path)))
    return registry
