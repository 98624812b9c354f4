"""Pipeline runner: ordered stages, per-stage logs and timings, resume by input hashes.

A run is one state document (``runs/<run-id>``) plus a directory (``<state>/runs/<run-id>/``)
holding ``logs/<stage>.log``, the stage outputs and ``report.json``. Each finished stage
stores the sha256 of its inputs; ``--resume`` skips a finished stage whose inputs are
unchanged and re-runs the failed one and everything after it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.extras import missing_extra
from ai_how.fsutil import atomic_write_text
from ai_how.layout import Layout
from ai_how.state.store import StateStore


def new_run_id(workload: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{workload}-{secrets.token_hex(2)}"


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RunOptions:
    workload: str
    model_name: str
    workload_args: list[str] = field(default_factory=list)
    resources: dict[str, int] = field(default_factory=dict)  # gpus / processes / nodes per job


@dataclass
class StageContext:
    run_id: str
    run_dir: Path
    config: ClusterConfig
    config_path: Path
    layout: Layout
    options: RunOptions
    outputs: dict[str, dict[str, Any]]  # outputs of the stages before this one (and this one's last run)
    log_path: Path
    log: Callable[[str], None]  # a line into the stage log (and the display)
    progress: Callable[[str], None]  # a line for the display only (already in the log)


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    inputs: Callable[[StageContext], dict[str, Any]]
    run: Callable[[StageContext], dict[str, Any]]
    # On resume, a finished stage with unchanged inputs is skipped only while this holds (e.g. the
    # server it started still runs); None: its outputs stay valid.
    still_valid: Callable[[StageContext], bool] | None = None


class StageFailedError(AiHowError):
    def __init__(self, stage: str, cause: AiHowError, run_id: str) -> None:
        super().__init__(f"stage {stage} failed: {cause.message}", fix=cause.fix)
        self.stage = stage
        self.run_id = run_id


class Observer(Protocol):
    def stage_started(self, stage: Stage) -> None: ...

    def stage_finished(self, stage: Stage, record: dict[str, Any]) -> None: ...

    def log_line(self, stage: Stage, line: str) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PipelineRun:
    """One run's state: created fresh, or loaded to resume."""

    def __init__(self, store: StateStore, layout: Layout, run_id: str) -> None:
        self.store, self.layout, self.run_id = store, layout, run_id
        self.doc_name = f"runs/{run_id}"
        self.run_dir = layout.run_dir(run_id)

    @classmethod
    def create(
        cls, store: StateStore, layout: Layout, config_path: Path, options: RunOptions, stages: list[Stage]
    ) -> PipelineRun:
        run = cls(store, layout, new_run_id(options.workload))
        with store.transaction(run.doc_name) as doc:
            doc.update(
                {
                    "run_id": run.run_id,
                    "config": str(config_path.resolve()),
                    "workload": options.workload,
                    "model_name": options.model_name,
                    "workload_args": options.workload_args,
                    "resources": options.resources,
                    "created": _now(),
                    "status": "pending",
                    "stages": {s.name: {"status": "pending"} for s in stages},
                }
            )
        return run

    @classmethod
    def load(cls, store: StateStore, layout: Layout, run_id: str) -> PipelineRun:
        run = cls(store, layout, run_id)
        if not store.exists(run.doc_name):
            known = [n.split("/", 1)[1] for n in store.names("runs")][-5:]
            raise AiHowError(
                f"no pipeline run {run_id!r} in {store.root}",
                fix=f"pick one of: {', '.join(known)}" if known else "start one with `ai-how pipeline run`",
            )
        return run

    def read(self) -> dict[str, Any]:
        return self.store.read(self.doc_name)

    @property
    def options(self) -> RunOptions:
        doc = self.read()
        return RunOptions(
            doc["workload"],
            doc["model_name"],
            list(doc.get("workload_args", [])),
            dict(doc.get("resources", {})),
        )

    def _update_stage(self, name: str, **fields: Any) -> dict[str, Any]:
        with self.store.transaction(self.doc_name) as doc:
            doc["stages"].setdefault(name, {}).update(fields)
            doc["updated"] = _now()
            return dict(doc["stages"][name])

    def _invalidate_after(self, stage: Stage, stages: list[Stage]) -> None:
        """Reset the records of the stages after ``stage``: their outputs came from what is about to change."""
        later = [s.name for s in stages[stages.index(stage) + 1 :]]
        with self.store.transaction(self.doc_name) as doc:
            for name in later:
                if doc["stages"].get(name, {}).get("status", "pending") != "pending":
                    doc["stages"][name] = {"status": "pending", "invalidated_by": stage.name}

    def _set_status(self, status: str, **fields: Any) -> None:
        with self.store.transaction(self.doc_name) as doc:
            doc.update(status=status, updated=_now(), **fields)

    def execute(
        self,
        stages: list[Stage],
        config: ClusterConfig,
        config_path: Path,
        observer: Observer,
        *,
        resume: bool,
        stop_after: str | None = None,
        debug: bool = False,
    ) -> dict[str, Any]:
        """Run (or resume) the stages in order; stop at the first failure, or after ``stop_after``.

        When a stage runs again, the records of every stage after it are reset to pending first,
        so a resumed run never shows a downstream result computed from the old upstream outputs.
        An unexpected exception (a bug, a library error) leaves its full traceback in the stage log,
        and on stderr with ``debug``.
        Returns the final run document (status ``succeeded``, or ``stopped`` when ``stop_after`` ended it early).
        """
        with self.store.lock(f"active/{self.run_id}", blocking=False):
            self._set_status("running", error=None, failed_stage=None)
            options = self.options
            outputs: dict[str, dict[str, Any]] = {}
            changed_upstream = False
            for stage in stages:
                log_path = self.run_dir / "logs" / f"{stage.name}.log"
                recorded = self.read()["stages"].get(stage.name, {})
                ctx = StageContext(
                    self.run_id,
                    self.run_dir,
                    config,
                    config_path,
                    self.layout,
                    options,
                    {**outputs, stage.name: recorded.get("outputs", {})},
                    log_path,
                    functools.partial(self._log, stage, log_path, observer=observer),
                    functools.partial(observer.log_line, stage),
                )
                input_hash = digest(stage.inputs(ctx))
                if (
                    resume
                    and not changed_upstream
                    and recorded.get("status") == "succeeded"
                    and recorded.get("input_hash") == input_hash
                    and (stage.still_valid is None or stage.still_valid(ctx))
                ):
                    record = self._update_stage(stage.name, skipped=True)
                    outputs[stage.name] = record.get("outputs", {})
                    observer.stage_finished(stage, record | {"status": "skipped"})
                    if stage.name == stop_after:
                        self._set_status("stopped", stopped_after=stage.name)
                        return self.read()
                    continue
                changed_upstream = True
                self._invalidate_after(stage, stages)
                observer.stage_started(stage)
                started = time.monotonic()
                self._update_stage(stage.name, status="running", started=_now(), skipped=False, error=None)
                try:
                    try:
                        result = stage.run(ctx)
                    except (AiHowError, KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:  # a bug or an unexpected library error: still a recorded failure
                        if isinstance(exc, ModuleNotFoundError) and (missing := missing_extra(exc)):
                            raise missing from exc  # an optional extra is not installed: name it
                        trace = traceback.format_exc()
                        self._log(stage, log_path, f"unexpected error:\n{trace.rstrip()}", observer=None)
                        if debug:
                            sys.stderr.write(trace)
                        raise AiHowError(
                            f"{type(exc).__name__}: {exc}", fix="run with --debug and report it"
                        ) from exc
                except AiHowError as exc:
                    record = self._update_stage(
                        stage.name,
                        status="failed",
                        finished=_now(),
                        duration_s=round(time.monotonic() - started, 3),
                        error=str(exc),
                    )
                    self._log(stage, log_path, f"FAILED: {exc}", observer=None)
                    self._set_status("failed", failed_stage=stage.name, error=str(exc))
                    observer.stage_finished(stage, record)
                    self.write_report(stages)
                    raise StageFailedError(stage.name, exc, self.run_id) from None
                except BaseException:
                    self._update_stage(stage.name, status="interrupted", finished=_now())
                    self._set_status("interrupted", failed_stage=stage.name)
                    raise
                record = self._update_stage(
                    stage.name,
                    status="succeeded",
                    finished=_now(),
                    duration_s=round(time.monotonic() - started, 3),
                    input_hash=input_hash,
                    outputs=result,
                )
                outputs[stage.name] = result
                observer.stage_finished(stage, record)
                if stage.name == stop_after and stage is not stages[-1]:
                    self._set_status("stopped", stopped_after=stage.name)
                    self.write_report(stages)
                    return self.read()
            self._set_status("succeeded")
            self.write_report(stages)
            return self.read()

    def _log(self, stage: Stage, path: Path, line: str, *, observer: Observer | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{_now()} {line}\n")
        if observer is not None:
            observer.log_line(stage, line)

    def write_report(self, stages: list[Stage]) -> dict[str, Any]:
        doc = self.read()
        report = {
            "run_id": self.run_id,
            "status": doc.get("status"),
            "workload": doc.get("workload"),
            "model_name": doc.get("model_name"),
            "error": doc.get("error"),
            "stages": [
                {
                    "name": s.name,
                    "status": doc["stages"].get(s.name, {}).get("status", "pending"),
                    "skipped": doc["stages"].get(s.name, {}).get("skipped", False),
                    "duration_s": doc["stages"].get(s.name, {}).get("duration_s"),
                    "outputs": doc["stages"].get(s.name, {}).get("outputs", {}),
                    "error": doc["stages"].get(s.name, {}).get("error"),
                }
                for s in stages
            ],
            "total_s": round(sum((doc["stages"].get(s.name, {}).get("duration_s") or 0) for s in stages), 3),
        }
        atomic_write_text(self.run_dir / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        return report
