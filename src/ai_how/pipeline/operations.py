"""Pipeline-level operations: start/resume a run, verify what is in production, roll back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_how.config.loader import LoadedConfig
from ai_how.deployers.base import DeployRequest, deployer_for
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.pipeline.inputs import check_stage, check_workload
from ai_how.pipeline.runner import Observer, PipelineRun, RunOptions
from ai_how.pipeline.stages import STAGES
from ai_how.state.store import StateStore
from ai_how.tracking import PRODUCTION, Tracker, tracking_uri_of

if TYPE_CHECKING:
    from ai_how.pipeline.checks import Check


def run_pipeline(
    loaded: LoadedConfig,
    store: StateStore,
    options: RunOptions,
    observer: Observer,
    resume: str | None = None,
    stop_after: str | None = None,
    debug: bool = False,
) -> tuple[PipelineRun, dict[str, Any]]:
    layout = Layout(store.root)
    if stop_after is not None:
        check_stage(stop_after, [s.name for s in STAGES])
    if resume is not None:
        run = PipelineRun.load(store, layout, resume)
    else:
        check_workload(options.workload)
    ensure_local_stack(loaded, layout)  # only once the inputs are known to be good
    if resume is None:
        run = PipelineRun.create(store, layout, loaded.path, options, STAGES)
    return run, run.execute(
        STAGES,
        loaded.config,
        loaded.path,
        observer,
        resume=resume is not None,
        stop_after=stop_after,
        debug=debug,
    )


def ensure_local_stack(loaded: LoadedConfig, layout: Layout) -> None:
    """The embedded default needs no separate step: start the local services (MLflow, and the S3
    endpoint when configured) if the config runs them here and they are not up. An external
    tracking URI is never started, only checked by the stages."""
    from ai_how.stack import services

    services.ensure_up(loaded.config, layout)


def resolve_run(store: StateStore, run_id: str) -> str:
    """``latest`` means the most recently created run."""
    if run_id != "latest":
        return run_id
    latest = latest_run(store)
    if latest is None:
        raise AiHowError(
            "there is no pipeline run yet", fix="start one with `ai-how pipeline run -c CONFIG --workload W`"
        )
    return latest


def latest_run(store: StateStore) -> str | None:
    names = store.names("runs")
    if not names:
        return None
    return max(names, key=lambda n: store.read(n).get("created", "")).split("/", 1)[1]


@dataclass
class ProductionModel:
    name: str
    version: int
    storage_uri: str
    manifest_sha256: str
    kind: str


def production_model(tracker: Tracker, name: str, version: int | None = None) -> ProductionModel:
    current = version if version is not None else tracker.alias_version(name, PRODUCTION)
    if current is None:
        raise AiHowError(
            f"model {name!r} has no @{PRODUCTION} version",
            fix="run `ai-how pipeline run` first, or check --model",
        )
    tags = tracker.version_tags(name, current)
    if "ai_how.storage_uri" not in tags:
        raise AiHowError(
            f"{name} v{current} was never synced to the object store",
            fix="resume the run that registered it (`ai-how pipeline run --resume RUN`)",
        )
    return ProductionModel(
        name,
        current,
        tags["ai_how.storage_uri"],
        tags.get("ai_how.manifest_sha256", ""),
        tags.get("ai_how.kind", "classifier"),
    )


def verify_production(
    loaded: LoadedConfig, store: StateStore, model_name: str
) -> tuple[ProductionModel, list[Check]]:
    from ai_how.pipeline.checks import verify_deployment  # httpx: only when checking

    config = loaded.config
    tracker = Tracker(tracking_uri_of(config), config.mlops.mlflow.experiment)
    model = production_model(tracker, model_name)
    endpoint = deployer_for(config, Layout(store.root)).endpoint(model_name)
    if endpoint is None:
        raise AiHowError(
            f"{model_name} is not deployed", fix="run `ai-how pipeline run` or `ai-how pipeline rollback`"
        )
    checks = verify_deployment(
        tracker=tracker,
        model=model_name,
        version=model.version,
        store_uri=model.storage_uri,
        store_config=config.mlops.object_store,
        endpoint=endpoint,
        kind=model.kind,
    )
    return model, checks


def rollback(
    loaded: LoadedConfig, store: StateStore, model_name: str, to_version: int | None = None
) -> dict[str, Any]:
    """Move @production back to the version that held it before (or ``to_version``) and redeploy it."""
    config = loaded.config
    layout = Layout(store.root)
    tracker = Tracker(tracking_uri_of(config), config.mlops.mlflow.experiment)
    current = tracker.alias_version(model_name, PRODUCTION)
    if current is None:
        raise AiHowError(f"model {model_name!r} has no @{PRODUCTION} version to roll back from")
    target = (
        to_version if to_version is not None else _previous_production(store, model_name, current, tracker)
    )
    if target == current:
        raise AiHowError(f"{model_name} v{target} is already @{PRODUCTION}")
    model = production_model(tracker, model_name, target)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = layout.root / "rollbacks" / f"{stamp}-{model_name}"
    deployer = deployer_for(config, layout)
    candidate = deployer.deploy(
        DeployRequest(
            model_name=model_name,
            version=target,
            storage_uri=model.storage_uri,
            config_path=loaded.path,
            run_dir=run_dir,
            log_path=run_dir / "server.log",
            run_id=f"rollback-{stamp}",
            tracking_uri=tracking_uri_of(config),
            manifest_sha256=model.manifest_sha256,
            kind=model.kind,
        )
    )
    failed = [c for c in rollback_checks(candidate.endpoint, model) if not c.ok]
    if failed:
        deployer.discard(model_name, target)
        raise AiHowError(
            f"v{target} failed its checks beside production, which stays on v{current}: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        )
    deployment = deployer.promote(model_name, target)
    tracker.set_alias(model_name, target, PRODUCTION)  # only once the old version serves again
    with store.transaction() as doc:
        doc.setdefault("rollbacks", []).append(
            {"model": model_name, "from": current, "to": target, "at": stamp, "endpoint": deployment.endpoint}
        )
    return {
        "model": model_name,
        "from": current,
        "to": target,
        "endpoint": deployment.endpoint,
        "ready_seconds": round(candidate.ready_seconds + deployment.ready_seconds, 3),
    }


def rollback_checks(endpoint: str, model: ProductionModel) -> list[Check]:
    """What a version must pass before it takes production back: the served version and the protocols."""
    import httpx

    from ai_how.pipeline.checks import TIMEOUT, protocol_checks, served_version_check

    served = served_version_check(httpx.Client(timeout=TIMEOUT), endpoint, model.name, model.version)
    return [served, *protocol_checks(endpoint, model.name, model.kind)]


def _previous_production(store: StateStore, model_name: str, current: int, tracker: Tracker) -> int:
    """The version @production pointed at before ``current`` was promoted (recorded by its promote stage)."""
    for name in store.names("runs"):
        promoted = store.read(name).get("stages", {}).get("promote", {}).get("outputs", {})
        if (promoted.get("model_name"), promoted.get("version")) == (model_name, current) and promoted.get(
            "previous_production"
        ) is not None:
            return int(promoted["previous_production"])
    older = [v for v in tracker.versions(model_name) if v < current]
    if not older:
        raise AiHowError(f"{model_name} v{current} is the first version: there is nothing to roll back to")
    return max(older)


def run_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        k: doc.get(k)
        for k in ("run_id", "workload", "model_name", "status", "created", "failed_stage", "error")
    }


def config_path_of(doc: dict[str, Any]) -> Path:
    return Path(doc["config"])
