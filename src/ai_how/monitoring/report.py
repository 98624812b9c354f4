"""What a pipeline run's report shows, gathered from where it lives: the run's state document (stages,
timings, sync, deploy, verify), MLflow's metric histories (or the job's ``progress.jsonl`` when MLflow
cannot be asked) and, optionally, an ``ai-how bench serve --json`` result.

No rendering here (``report_html`` draws the page) and no failure for a missing source: a section
that cannot be filled says why, so a report of a failed or half-finished run still comes out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.pipeline.operations import resolve_run
from ai_how.pipeline.runner import PipelineRun
from ai_how.procs import http_ok
from ai_how.state.store import StateStore
from ai_how.workloads.progress import PROGRESS_FILE

MLFLOW_TIMEOUT_S = 3.0
# progress.jsonl fields that are coordinates or bookkeeping, not curves
_PROGRESS_AXES = {"time", "step", "total_steps", "epoch"}


@dataclass
class Curve:
    """One metric's history: ``values[i]`` at ``steps[i]``."""

    metric: str
    steps: list[float]
    values: list[float]


@dataclass
class Training:
    curves: list[Curve] = field(default_factory=list)
    source: str = ""  # where the curves came from, said in the page
    notes: list[str] = field(default_factory=list)  # why a source was not used


@dataclass
class LatencyPoint:
    """One load point of a bench run: percentiles in milliseconds."""

    endpoint: str
    point: str
    requests_per_s: float | None
    p50: float
    p95: float
    p99: float
    mean: float


@dataclass
class Latency:
    samples_ms: list[float] = field(default_factory=list)  # single requests (verify): a histogram
    samples_source: str = ""
    points: list[LatencyPoint] = field(default_factory=list)  # bench load points: percentiles
    points_source: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class StageRow:
    name: str
    status: str  # succeeded | failed | running | pending | skipped | interrupted
    started: datetime | None
    duration_s: float | None
    outputs: dict[str, Any]
    error: str | None


@dataclass
class RunReport:
    run: dict[str, Any]  # the run's state document
    stages: list[StageRow]
    training: Training
    latency: Latency

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    def outputs(self, stage: str) -> dict[str, Any]:
        return next((s.outputs for s in self.stages if s.name == stage), {})

    def sections(self) -> dict[str, str | None]:
        """Each section of the report: None when it has content, else why it is empty."""
        verify = self.outputs("verify").get("checks")
        return {
            "stages": None if self.stages else "the run has no stages",
            "training": None if self.training.curves else "; ".join(self.training.notes) or "no curves",
            "sync": None if self.outputs("sync") else "the sync stage has not finished",
            "deploy": None if self.outputs("deploy") else "the deploy stage has not finished",
            "verify": None if verify else "the verify stage has not finished",
            "latency": None
            if self.latency.samples_ms or self.latency.points
            else "; ".join(self.latency.notes) or "no latencies",
        }


# --------------------------------------------------------------------------- the run


def load_run(store: StateStore, run_id: str) -> dict[str, Any]:
    """The run's state document; ``latest`` is the newest run. A missing run is one error with the fix."""
    return PipelineRun.load(store, Layout(store.root), resolve_run(store, run_id)).read()


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def stage_rows(doc: dict[str, Any]) -> list[StageRow]:
    """The stages in pipeline order (the state store keeps a document's keys sorted)."""
    from ai_how.pipeline.stages import STAGES

    recorded = doc.get("stages", {})
    order = [s.name for s in STAGES if s.name in recorded] + sorted(set(recorded) - {s.name for s in STAGES})
    rows = []
    for name in order:
        record = recorded[name]
        skipped = bool(record.get("skipped"))
        rows.append(
            StageRow(
                name,
                "skipped" if skipped else str(record.get("status", "pending")),
                None if skipped else _time(record.get("started")),
                None if skipped else record.get("duration_s"),
                dict(record.get("outputs") or {}),
                record.get("error"),
            )
        )
    return rows


def training_dir(doc: dict[str, Any], shared_root: str | None) -> Path | None:
    """The training job's output folder: beside the model it wrote, or where the stage puts it."""
    model_dir = doc.get("stages", {}).get("train", {}).get("outputs", {}).get("model_dir")
    if model_dir:
        return Path(model_dir).parent
    if shared_root is None:
        return None
    return Path(shared_root) / "models" / str(doc.get("model_name")) / str(doc["run_id"])


# --------------------------------------------------------------------------- training curves


class SourceUnavailableError(Exception):
    """A source of the report cannot be read; the message says why, for the page."""


def mlflow_curves(tracking_uri: str, mlflow_run_id: str) -> list[Curve]:
    """Every metric of the MLflow run that has more than one step, from its recorded history."""
    if tracking_uri.startswith("http") and not http_ok(
        f"{tracking_uri.rstrip('/')}/health", MLFLOW_TIMEOUT_S
    ):
        raise SourceUnavailableError(
            f"MLflow at {tracking_uri} does not answer (start it: `ai-how stack up -c CONFIG` or `make mlops-stack`)"
        )
    from ai_how.tracking import fail_fast_http

    fail_fast_http()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        keys = sorted(client.get_run(mlflow_run_id).data.metrics)
        histories = {key: client.get_metric_history(mlflow_run_id, key) for key in keys}
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceUnavailableError(f"MLflow at {tracking_uri}: {first}") from None
    curves = []
    for key, history in histories.items():
        ordered = sorted(history, key=lambda m: (m.step, m.timestamp))
        if len(ordered) > 1:
            curves.append(Curve(key, [float(m.step) for m in ordered], [float(m.value) for m in ordered]))
    return curves


def progress_curves(path: Path) -> list[Curve]:
    """Curves from a training job's ``progress.jsonl``: each numeric field against ``step``."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise SourceUnavailableError(f"{path}: {exc.strerror or exc}") from None
    series: dict[str, Curve] = {}
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a line still being written
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            continue
        for key, value in record.items():
            if key not in _PROGRESS_AXES and _is_number(value):
                curve = series.setdefault(key, Curve(key, [], []))
                curve.steps.append(float(record["step"]))
                curve.values.append(float(value))
    return [c for _, c in sorted(series.items()) if len(c.values) > 1]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def training(doc: dict[str, Any], tracking_uri: str | None, job_dir: Path | None) -> Training:
    """MLflow's metric histories of the run; the job's progress.jsonl when MLflow cannot give them."""
    result = Training()
    mlflow_run = doc.get("stages", {}).get("train", {}).get("outputs", {}).get("mlflow_run_id")
    if not mlflow_run:
        result.notes.append("the train stage recorded no MLflow run")
    elif tracking_uri is None:
        result.notes.append("no config to find MLflow with (pass -c CONFIG)")
    else:
        try:
            result.curves = mlflow_curves(tracking_uri, str(mlflow_run))
            result.source = f"MLflow run {mlflow_run} at {tracking_uri}"
        except SourceUnavailableError as exc:
            result.notes.append(str(exc))
        else:
            if result.curves:
                return result
            result.notes.append(f"MLflow run {mlflow_run} has no metric with more than one step")
    if job_dir is None:
        return result
    path = job_dir / PROGRESS_FILE
    if not path.is_file():
        result.notes.append(f"no {PROGRESS_FILE} in {job_dir}")
        return result
    try:
        result.curves = progress_curves(path)
    except SourceUnavailableError as exc:
        result.notes.append(str(exc))
        return result
    if result.curves:
        result.source = f"{path} (the training job's own progress lines)"
    else:
        result.notes.append(f"{path} has fewer than two steps")
    return result


# --------------------------------------------------------------------------- latency


def verify_latencies(doc: dict[str, Any]) -> list[float]:
    """Request latencies (ms) the verify checks recorded: ``latencies_ms`` lists or ``latency_ms`` values."""
    found: list[float] = []
    for check in doc.get("stages", {}).get("verify", {}).get("outputs", {}).get("checks", []):
        many = check.get("latencies_ms")
        if isinstance(many, list):
            found += [float(v) for v in many if _is_number(v)]
        if _is_number(check.get("latency_ms")):
            found.append(float(check["latency_ms"]))
    return found


def load_bench(path: Path) -> dict[str, Any]:
    """An ``ai-how bench serve --json`` result file (``{"endpoint", "points", ...}``)."""
    fix = "save one with `ai-how bench serve --url URL --model NAME --duration 10 --concurrency 1,8 --json > bench.json`"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise AiHowError(f"--bench {path}: {exc.strerror or exc}", fix=fix) from None
    except ValueError as exc:
        raise AiHowError(f"--bench {path} is not JSON: {exc}", fix=fix) from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("endpoint"), dict)
        and isinstance(data.get("points"), list)
    ):
        raise AiHowError(
            f"--bench {path} is not an `ai-how bench serve --json` result (no endpoint/points)", fix=fix
        )
    return data


def bench_points(bench: dict[str, Any]) -> list[LatencyPoint]:
    """Every measured load point of the bench result (and of its --compare server)."""
    runs = [(bench["endpoint"], bench["points"])]
    if isinstance(bench.get("compare"), dict):
        runs.append((bench["compare"]["endpoint"], bench["compare"]["points"]))
    points = []
    for endpoint, measured in runs:
        name = f"{endpoint.get('url')} {endpoint.get('protocol')}"
        for p in measured:
            latency = p.get("latency_ms")
            if isinstance(latency, dict):
                points.append(
                    LatencyPoint(
                        name,
                        str(p.get("point")),
                        p.get("requests_per_s"),
                        *(float(latency[k]) for k in ("p50", "p95", "p99", "mean")),
                    )
                )
    return points


def latency(doc: dict[str, Any], bench: dict[str, Any] | None, bench_path: Path | None) -> Latency:
    result = Latency(samples_ms=verify_latencies(doc))
    if result.samples_ms:
        result.samples_source = "the verify stage's requests"
    else:
        result.notes.append("the verify stage recorded no request latencies")
    if bench is None:
        result.notes.append("no bench result given (--bench FILE from `ai-how bench serve --json`)")
        return result
    result.points = bench_points(bench)
    if result.points:
        result.points_source = f"ai-how bench serve result {bench_path}"
    else:
        result.notes.append(f"{bench_path} has no load point with successful requests")
    return result


# --------------------------------------------------------------------------- the whole report


def build_report(
    doc: dict[str, Any],
    *,
    tracking_uri: str | None,
    job_dir: Path | None,
    bench: dict[str, Any] | None = None,
    bench_path: Path | None = None,
) -> RunReport:
    return RunReport(
        doc, stage_rows(doc), training(doc, tracking_uri, job_dir), latency(doc, bench, bench_path)
    )


def default_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "reports" / f"{run_id}.html"


def latest_report(state_dir: Path) -> Path | None:
    """The most recently written report page, if any."""
    pages = [p for p in (state_dir / "reports").glob("*.html") if p.is_file()]
    return max(pages, key=lambda p: p.stat().st_mtime) if pages else None


def text_summary(report: RunReport) -> list[str]:
    """A few lines for the terminal: status, each stage, the headline figures."""
    doc = report.run
    lines = [
        f"run {report.run_id} ({doc.get('workload')}, model {doc.get('model_name')}): {doc.get('status')}"
    ]
    for row in report.stages:
        seconds = f"{row.duration_s:8.2f} s" if row.duration_s is not None else " " * 10
        lines.append(f"  {row.name:<9} {row.status:<11}{seconds}  {stage_headline(row)}".rstrip())
    for name, why in report.sections().items():
        if name in ("training", "latency"):
            lines.append(f"  {name}: {why}" if why else f"  {name}: {_shown(report, name)}")
    return lines


def _shown(report: RunReport, name: str) -> str:
    if name == "training":
        return f"{len(report.training.curves)} curves from {report.training.source}"
    parts = []
    if report.latency.samples_ms:
        parts.append(f"{len(report.latency.samples_ms)} verify requests")
    if report.latency.points:
        parts.append(f"{len(report.latency.points)} bench load points")
    return ", ".join(parts)


def stage_headline(row: StageRow) -> str:
    """What the stage produced, in one line (its error when it failed)."""
    out = row.outputs
    if row.status == "failed":
        return str(row.error or "")
    if not out:
        return ""
    if row.name == "train":
        metrics = out.get("metrics", {})
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if k in ("loss", "accuracy") and _is_number(v)
        )
        return f"job {out.get('job_id')}; {shown}"
    if row.name == "register":
        return f"{out.get('model_name')} v{out.get('version')}"
    if row.name == "sync":
        return f"{len(out.get('uploaded', []))} files, {human_bytes(out.get('bytes_uploaded', 0))} → {out.get('uri')}"
    if row.name == "deploy":
        return f"{out.get('endpoint')} ready in {out.get('ready_seconds')} s"
    if row.name == "verify":
        checks = out.get("checks", [])
        return f"{sum(bool(c.get('ok')) for c in checks)}/{len(checks)} checks passed"
    if row.name == "promote":
        was = out.get("previous_production")
        return f"v{out.get('version')} @production" + (
            f" (was v{was})" if was is not None else " (the first)"
        )
    return ""


def human_bytes(count: Any) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
