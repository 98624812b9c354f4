"""The pipeline's stages: train → register → sync → deploy → verify → promote (MLOPS-5.1).

``@production`` moves only in ``promote``, after the new version served beside the old one and
passed every check; until then the version carries the ``candidate`` alias.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ai_how import __version__
from ai_how.config.models import ClusterConfig
from ai_how.deployers.base import DeployError, DeployRequest, deployer_for
from ai_how.errors import AiHowError
from ai_how.executors.base import JobSpec, executor_for, shared_root
from ai_how.fsutil import atomic_write_text
from ai_how.layout import Layout
from ai_how.objectstore.base import StoreURI, open_store
from ai_how.objectstore.manifest import Manifest
from ai_how.objectstore.sync import sync_directory
from ai_how.pipeline.runner import Stage, StageContext
from ai_how.tracking import CANDIDATE, PRODUCTION, RUN_TAG, Tracker, tracking_uri_of
from ai_how.workloads.common import RESULT_FILE


def code_version() -> str:
    """The ai-how version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def tracker_for(ctx: StageContext) -> Tracker:
    return Tracker(tracking_uri_of(ctx.config), ctx.config.mlops.mlflow.experiment)


def model_store_uri(config: ClusterConfig, layout: Layout, model_name: str, version: int) -> StoreURI:
    """Where a model version is synced: <models bucket>/<name>/v<version> in the configured store."""
    store = config.mlops.object_store
    if store.backend == "s3":
        return StoreURI("s3", store.buckets.models, f"{model_name}/v{version}")
    root = Path(store.root).expanduser() if store.root else layout.objects
    return StoreURI("file", str(root / store.buckets.models), f"{model_name}/v{version}")


def training_output(ctx: StageContext) -> Path:
    """The run's directory on the shared storage (BeeGFS layout: models/<name>/<run>)."""
    return Path(shared_root(ctx.config, ctx.layout.root)) / "models" / ctx.options.model_name / ctx.run_id


# --------------------------------------------------------------------------- train


def train_inputs(ctx: StageContext) -> dict[str, Any]:
    hpc = ctx.config.clusters.hpc
    return {
        "workload": ctx.options.workload,
        "args": ctx.options.workload_args,
        "resources": ctx.options.resources,
        "scheduler": hpc.scheduler if hpc else "local",
        "code": code_version(),
    }


def train(ctx: StageContext) -> dict[str, Any]:
    tracker = tracker_for(ctx)  # fail fast, before training, when MLflow is unreachable
    executor = executor_for(ctx.config, ctx.layout.root)
    output = training_output(ctx)
    if output.exists():
        shutil.rmtree(output)  # a re-run starts clean
    spec = JobSpec(
        name=ctx.run_id,
        workload=ctx.options.workload,
        args=ctx.options.workload_args,
        output_dir=output,
        log_path=ctx.log_path,
        gpus=ctx.options.resources.get("gpus", 0),
        processes=ctx.options.resources.get("processes", 1),
        nodes=ctx.options.resources.get("nodes", 1),
    )
    ctx.log(f"submitting {spec.workload} to the {executor.name} executor; output {output}")
    job = executor.run(spec, on_line=ctx.progress)  # the executor writes the job's output to the stage log
    result = json.loads((output / RESULT_FILE).read_text())
    model_dir = output / "model"
    manifest = Manifest.of_directory(model_dir)
    mlflow_run = tracker.start_run(
        ctx.run_id,
        f"{ctx.options.workload}-{ctx.run_id}",
        {
            "ai_how.workload": ctx.options.workload,
            "ai_how.job_id": job.job_id,
            "ai_how.executor": executor.name,
            "ai_how.code_version": code_version(),
            "ai_how.dataset_sha256": result["dataset_sha256"],
        },
    )
    metrics = result["metrics"]
    histories = {k: v for k, v in metrics.items() if isinstance(v, list) and v}
    scalars = {k: [v] for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    calls = tracker.log_batch(
        mlflow_run,
        params=result["params"] | {"job_id": job.job_id},
        metrics=histories | scalars,
        tags={"ai_how.model_sha256": manifest.digest},
    )
    tracker.finish_run(mlflow_run)
    ctx.log(
        f"job {job.job_id} finished in {job.duration_s:.1f} s; MLflow run {mlflow_run} ({calls} log_batch call(s))"
    )
    summary = {k: (v[-1] if isinstance(v, list) and v else v) for k, v in metrics.items()}
    return {
        "model_dir": str(model_dir),
        "job_id": job.job_id,
        "mlflow_run_id": mlflow_run,
        "dataset_sha256": result["dataset_sha256"],
        "model_sha256": manifest.digest,
        "kind": result["kind"],
        "metrics": summary,
    }


# --------------------------------------------------------------------------- register


def register_inputs(ctx: StageContext) -> dict[str, Any]:
    train_out = ctx.outputs["train"]
    return {
        "model_sha256": train_out["model_sha256"],
        "mlflow_run_id": train_out["mlflow_run_id"],
        "model_name": ctx.options.model_name,
    }


def register(ctx: StageContext) -> dict[str, Any]:
    tracker = tracker_for(ctx)
    train_out = ctx.outputs["train"]
    name = ctx.options.model_name
    source = tracker.log_model(train_out["mlflow_run_id"], Path(train_out["model_dir"]), train_out["kind"])
    ref = tracker.register(
        name,
        train_out["mlflow_run_id"],
        source,
        {
            RUN_TAG: ctx.run_id,
            "ai_how.workload": ctx.options.workload,
            "ai_how.kind": train_out["kind"],
            "ai_how.model_sha256": train_out["model_sha256"],
            "ai_how.dataset_sha256": train_out["dataset_sha256"],
            "ai_how.job_id": train_out["job_id"],
        },
        description=f"{ctx.options.workload} trained by ai-how run {ctx.run_id}",
    )
    tracker.set_alias(name, ref.version, CANDIDATE)
    production = tracker.alias_version(name, PRODUCTION)
    ctx.log(f"registered {name} v{ref.version} from {source} as @{CANDIDATE}; @{PRODUCTION} is {production}")
    return {"model_name": name, "version": ref.version, "source": source, "production": production}


# --------------------------------------------------------------------------- sync


def sync_inputs(ctx: StageContext) -> dict[str, Any]:
    reg = ctx.outputs["register"]
    target = model_store_uri(ctx.config, ctx.layout, reg["model_name"], reg["version"])
    return {
        "model_sha256": ctx.outputs["train"]["model_sha256"],
        "version": reg["version"],
        "target": str(target),
    }


def sync(ctx: StageContext) -> dict[str, Any]:
    reg, train_out = ctx.outputs["register"], ctx.outputs["train"]
    target = model_store_uri(ctx.config, ctx.layout, reg["model_name"], reg["version"])
    store, prefix = open_store(target, ctx.config.mlops.object_store)
    report = sync_directory(
        Path(train_out["model_dir"]),
        store,
        prefix,
        state_path=ctx.run_dir / "sync-state.json",
        delete=True,  # prune stale files, only inside this version's own prefix
        meta={
            "model_name": reg["model_name"],
            "version": reg["version"],
            "run": ctx.run_id,
            "kind": train_out["kind"],
            "mlflow_run_id": train_out["mlflow_run_id"],
        },
        on_file=lambda path, outcome: ctx.log(f"{outcome}: {path}"),
    )
    tracker_for(ctx).set_version_tags(
        reg["model_name"],
        reg["version"],
        {"ai_how.storage_uri": str(target), "ai_how.manifest_sha256": report.manifest_digest},
    )
    ctx.log(
        f"synced to {target}: {len(report.uploaded)} uploaded, {len(report.skipped)} unchanged, "
        f"{report.bytes_uploaded} bytes in {report.duration_s:.2f} s"
    )
    return {"uri": str(target), "manifest_sha256": report.manifest_digest, **report.to_json()}


# --------------------------------------------------------------------------- deploy


def production_unchanged(ctx: StageContext) -> str:
    """What a failure before promote leaves in production, said in the error."""
    try:
        production = tracker_for(ctx).alias_version(ctx.options.model_name, PRODUCTION)
    except AiHowError:
        return f"@{PRODUCTION} was not touched"
    if production is None:
        return f"nothing was promoted: the model has no @{PRODUCTION} version yet"
    return f"@{PRODUCTION} stays on v{production}, which keeps serving"


def deploy_inputs(ctx: StageContext) -> dict[str, Any]:
    return {
        "uri": ctx.outputs["sync"]["uri"],
        "manifest_sha256": ctx.outputs["sync"]["manifest_sha256"],
        "serving": ctx.config.mlops.serving.model_dump(mode="json"),
    }


def render_manifests(ctx: StageContext, version: int, uri: str, manifest_sha256: str) -> Path:
    """The KServe objects that serve this version, written beside the run for review and GitOps."""
    from ai_how.kube import kserve

    model = kserve.ModelVersion(
        name=ctx.options.model_name,
        version=version,
        storage_uri=uri,
        kind=ctx.outputs["train"]["kind"],
        run_id=ctx.run_id,
        tracking_uri=tracking_uri_of(ctx.config),
        manifest_sha256=manifest_sha256,
    )
    documents = [
        kserve.service_account(ctx.config),
        kserve.serving_runtime(ctx.config),
        kserve.inference_service(ctx.config, model),
    ]
    path = ctx.run_dir / "inferenceservice.yaml"
    atomic_write_text(path, yaml.safe_dump_all(documents, sort_keys=False))
    return path


def deploy(ctx: StageContext) -> dict[str, Any]:
    reg, synced = ctx.outputs["register"], ctx.outputs["sync"]
    manifest_path = render_manifests(ctx, reg["version"], synced["uri"], synced["manifest_sha256"])
    ctx.log(f"rendered KServe manifests: {manifest_path}")
    deployer = deployer_for(ctx.config, ctx.layout)
    try:
        deployment = deployer.deploy(
            DeployRequest(
                model_name=reg["model_name"],
                version=reg["version"],
                storage_uri=synced["uri"],
                config_path=ctx.config_path,
                run_dir=ctx.run_dir,
                log_path=ctx.run_dir / "logs" / "server.log",
                run_id=ctx.run_id,
                tracking_uri=tracking_uri_of(ctx.config),
                manifest_sha256=synced["manifest_sha256"],
                kind=ctx.outputs["train"]["kind"],
            )
        )
    except DeployError as exc:
        raise DeployError(f"{exc.message}. {production_unchanged(ctx)}", fix=exc.fix) from None
    ctx.log(
        f"{deployer.name}: {reg['model_name']} v{reg['version']} ready at {deployment.endpoint} "
        f"in {deployment.ready_seconds:.1f} s"
    )
    return {
        "backend": deployer.name,
        "endpoint": deployment.endpoint,
        "ready_seconds": round(deployment.ready_seconds, 3),
        "inferenceservice": str(manifest_path),
        **deployment.details,
    }


def deployment_running(ctx: StageContext) -> bool:
    """The version deploy brought up still serves (a resumed run re-deploys a server that went away)."""
    recorded = ctx.outputs.get("deploy", {})
    reg = ctx.outputs.get("register", {})
    if not recorded or not reg:
        return False
    return deployer_for(ctx.config, ctx.layout).serves(reg["model_name"], reg["version"])


# --------------------------------------------------------------------------- verify


def verify_inputs(ctx: StageContext) -> dict[str, Any]:
    return {
        "endpoint": ctx.outputs["deploy"]["endpoint"],
        "version": ctx.outputs["register"]["version"],
        "manifest_sha256": ctx.outputs["sync"]["manifest_sha256"],
    }


def verify(ctx: StageContext) -> dict[str, Any]:
    from ai_how.pipeline.checks import verify_deployment

    reg, deployed = ctx.outputs["register"], ctx.outputs["deploy"]
    checks = verify_deployment(
        tracker=tracker_for(ctx),
        model=reg["model_name"],
        version=reg["version"],
        alias=CANDIDATE,
        store_uri=ctx.outputs["sync"]["uri"],
        store_config=ctx.config.mlops.object_store,
        endpoint=deployed["endpoint"],
        kind=ctx.outputs["train"]["kind"],
    )
    for check in checks:
        ctx.log(f"{'PASS' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise AiHowError(
            f"{len(failed)} of {len(checks)} checks of v{reg['version']} failed: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed)
            + f". {production_unchanged(ctx)}; the candidate is left at {deployed['endpoint']} for inspection",
            fix="fix the cause, then `ai-how pipeline run --resume RUN`; `ai-how stack down` stops the candidate",
        )
    return {"checks": [c.to_json() for c in checks]}


# --------------------------------------------------------------------------- promote


def promote_inputs(ctx: StageContext) -> dict[str, Any]:
    return {
        "endpoint": ctx.outputs["deploy"]["endpoint"],
        "version": ctx.outputs["register"]["version"],
    }


def promote(ctx: StageContext) -> dict[str, Any]:
    """The verified candidate becomes production: the server switch first, then ``@production``."""
    reg = ctx.outputs["register"]
    name, version = reg["model_name"], reg["version"]
    tracker = tracker_for(ctx)
    previous = tracker.alias_version(name, PRODUCTION)
    if previous == version:  # a resumed promote whose alias already moved: keep the recorded holder
        previous = ctx.outputs.get("promote", {}).get("previous_production")
    deployment = deployer_for(ctx.config, ctx.layout).promote(name, version)
    tracker.set_alias(name, version, PRODUCTION)
    tracker.set_version_tags(name, version, {"ai_how.previous_production": str(previous or "")})
    ctx.log(
        f"{name} v{version} serves production at {deployment.endpoint} "
        f"(switched in {deployment.ready_seconds:.2f} s); @{PRODUCTION} {previous} -> {version}"
    )
    return {
        "model_name": name,
        "version": version,
        "previous_production": previous,
        "endpoint": deployment.endpoint,
        "switch_seconds": round(deployment.ready_seconds, 3),
        **deployment.details,
    }


STAGES: list[Stage] = [
    Stage(
        "train",
        "run the workload on the executor; log params and metric histories to MLflow",
        train_inputs,
        train,
    ),
    Stage(
        "register",
        "log the model to its MLflow run as an MLflow Model, register a version (@candidate)",
        register_inputs,
        register,
    ),
    Stage("sync", "copy the version to the object store with a sha256 manifest, verified", sync_inputs, sync),
    Stage(
        "deploy",
        "serve the version beside production (local server or KServe) and render its InferenceService",
        deploy_inputs,
        deploy,
        still_valid=deployment_running,
    ),
    Stage(
        "verify",
        "the candidate: served version, registry, object store, V1/V2/OpenAI protocols, metrics",
        verify_inputs,
        verify,
    ),
    Stage(
        "promote", "switch production to the verified version, then move @production", promote_inputs, promote
    ),
]
