"""``ai-how deploy MODEL[@ALIAS|/VERSION]``: serve any MLflow registry version, outside a pipeline run.

The MLflow → KServe link: the version is resolved in the registry; a version ai-how synced before is
served from the object store as is; any other (registered by someone else, e.g. an MLflow transformers
model) is downloaded from MLflow, turned into the directory the model server loads (the Hugging Face
directory of a transformers model; the data folder of ai-how's pyfunc), synced with its sha256 manifest
to ``<models bucket>/<name>/v<N>`` and tagged in the registry (``ai_how.storage_uri``, ...). Then it runs
as a candidate beside production, must pass the protocol checks, and only then replaces production, with
whichever deployer the config names (local or KServe). Registry aliases are left as they are.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ai_how.config.loader import LoadedConfig
from ai_how.deployers.base import DeployRequest, deployer_for
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.mlflow_models import CLASSIFIER, LLM
from ai_how.state.store import StateStore
from ai_how.tracking import Tracker, tracking_uri_of

Progress = Callable[[str], None]
_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))?$"
)
_PYFUNC_LOADER = "ai_how.mlflow_models"


@dataclass(frozen=True)
class VersionRef:
    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version is not None else self.name


def parse_ref(text: str) -> VersionRef:
    match = _REF.match(text.strip())
    if match is None:
        raise AiHowError(
            f"{text!r} does not name a registry version",
            fix="write MODEL (its latest version), MODEL@ALIAS (e.g. digits-cnn@production) or MODEL/VERSION",
        )
    version = match["version"]
    return VersionRef(match["name"], match["alias"], int(version) if version else None)


def resolve(tracker: Tracker, ref: VersionRef) -> int:
    if ref.version is not None:
        if ref.version not in tracker.versions(ref.name):
            raise AiHowError(
                f"{ref.name} has no version {ref.version} in the registry",
                fix=f"pick one of its versions: {_listed(tracker.versions(ref.name))}",
            )
        return ref.version
    if ref.alias is not None:
        found = tracker.alias_version(ref.name, ref.alias)
        if found is None:
            raise AiHowError(
                f"{ref.name} has no alias @{ref.alias}",
                fix=f"name a version instead ({ref.name}/N; versions: {_listed(tracker.versions(ref.name))})",
            )
        return found
    versions = tracker.versions(ref.name)
    if not versions:
        raise AiHowError(
            f"the registry has no model {ref.name!r}",
            fix="check the name (`mlflow models` UI or `ai-how pipeline status`), or register it first",
        )
    return max(versions)


def _listed(versions: list[int]) -> str:
    return ", ".join(map(str, versions)) or "none"


# --------------------------------------------------------------------------- a servable directory


def servable_dir(mlflow_model: Path, dest: Path) -> str:
    """Turn a downloaded MLflow Model into what the model server loads, at ``dest``; returns its kind."""
    mlmodel = mlflow_model / "MLmodel"
    if not mlmodel.is_file():
        raise AiHowError(
            f"the registered version is not an MLflow Model ({mlmodel.name} is missing)",
            fix="register an MLflow Model (mlflow.<flavor>.log_model), or serve the files with `ai-how serve`",
        )
    flavors: dict[str, Any] = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    if "transformers" in flavors:
        weights = mlflow_model / str(flavors["transformers"].get("model_binary") or "model")
        if not (weights / "config.json").is_file():
            raise AiHowError(
                "the transformers model stores no weights (saved with save_pretrained=False)",
                fix="log it again with save_pretrained=True so the registry holds the weights",
            )
        shutil.copytree(weights, dest)
        for component in ("tokenizer", "processor"):  # MLflow keeps the tokenizer apart: put it beside
            folder = mlflow_model / "components" / component
            if folder.is_dir():
                shutil.copytree(folder, dest, dirs_exist_ok=True)
        return LLM
    pyfunc = flavors.get("python_function") or {}
    if pyfunc.get("loader_module") == _PYFUNC_LOADER and pyfunc.get("data"):
        shutil.copytree(mlflow_model / str(pyfunc["data"]), dest)
        return CLASSIFIER
    raise AiHowError(
        f"ai-how's model server cannot serve this version (flavors: {', '.join(sorted(flavors)) or 'none'})",
        fix="ai-how serves Hugging Face causal LMs (transformers flavour) and the classifiers it trains; "
        "serve other flavours with `mlflow models serve` or KServe's mlserver runtime",
    )


# --------------------------------------------------------------------------- sync, then serve


@dataclass
class Synced:
    uri: str
    manifest_sha256: str
    kind: str
    synced_now: bool


def ensure_synced(
    loaded: LoadedConfig, layout: Layout, tracker: Tracker, name: str, version: int, progress: Progress
) -> Synced:
    """The version in the object store: as ai-how synced it before, or downloaded and synced now."""
    from ai_how.objectstore.base import open_store
    from ai_how.objectstore.sync import sync_directory
    from ai_how.pipeline.stages import model_store_uri

    tags = tracker.version_tags(name, version)
    if tags.get("ai_how.storage_uri") and tags.get("ai_how.manifest_sha256"):
        progress(f"{name} v{version} is in the object store: {tags['ai_how.storage_uri']}")
        return Synced(
            tags["ai_how.storage_uri"],
            tags["ai_how.manifest_sha256"],
            tags.get("ai_how.kind", CLASSIFIER),
            False,
        )
    import mlflow.artifacts

    config = loaded.config
    target = model_store_uri(config, layout, name, version)
    with tempfile.TemporaryDirectory(prefix="ai-how-deploy-", dir=layout.root) as tmp:
        progress(f"downloading {name} v{version} from MLflow")
        # The version's own artifact location: a models:/ URI would be resolved against MLflow's
        # default registry, not the config's.
        source = tracker.download_uri(name, version)
        downloaded = Path(
            tracker.call(
                "artifact download",
                mlflow.artifacts.download_artifacts,
                artifact_uri=source,
                dst_path=str(Path(tmp) / "mlflow"),
                tracking_uri=tracking_uri_of(config),
            )
        )
        model_dir = Path(tmp) / "model"
        kind = servable_dir(downloaded, model_dir)
        progress(f"syncing the {kind} to {target} (sha256 manifest, every upload verified)")
        store, prefix = open_store(target, config.mlops.object_store)
        report = sync_directory(
            model_dir,
            store,
            prefix,
            state_path=layout.root / "sync" / f"deploy-{name}-v{version}.json",
            delete=True,
            meta={
                "model_name": name,
                "version": version,
                "kind": kind,
                "source": f"models:/{name}/{version}",
            },
        )
    tracker.set_version_tags(
        name,
        version,
        {
            "ai_how.storage_uri": str(target),
            "ai_how.manifest_sha256": report.manifest_digest,
            "ai_how.kind": kind,
        },
    )
    return Synced(str(target), report.manifest_digest, kind, True)


def deploy_version(
    loaded: LoadedConfig,
    store: StateStore,
    ref_text: str,
    *,
    progress: Progress,
    canary_percent: int | None = None,
) -> dict[str, Any]:
    """Serve the version ``ref_text`` names in production (after it passes its checks beside it), or
    with ``canary_percent`` (KServe's Knative mode) send that share of production's traffic to it."""
    import httpx

    from ai_how.pipeline.checks import TIMEOUT, protocol_checks, served_version_check

    config = loaded.config
    layout = Layout(store.root)
    ref = parse_ref(ref_text)
    tracker = Tracker(tracking_uri_of(config), config.mlops.mlflow.experiment)
    version = resolve(tracker, ref)
    from ai_how.kube.kserve import check_isvc_name

    if config.mlops.serving.backend == "kserve":
        check_isvc_name(ref.name)
    if canary_percent is not None and config.mlops.serving.backend != "kserve":
        raise AiHowError(
            "--canary splits traffic between KServe revisions; the local backend has no traffic split",
            fix="set mlops.serving.backend: kserve with deployment_mode: Knative, or deploy without --canary",
        )
    synced = ensure_synced(loaded, layout, tracker, ref.name, version, progress)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = layout.root / "deploys" / f"{stamp}-{ref.name}-v{version}"
    deployer = deployer_for(config, layout)
    request = DeployRequest(
        model_name=ref.name,
        version=version,
        storage_uri=synced.uri,
        config_path=loaded.path,
        run_dir=run_dir,
        log_path=run_dir / "server.log",
        run_id=f"deploy-{stamp}",
        tracking_uri=tracking_uri_of(config),
        manifest_sha256=synced.manifest_sha256,
        kind=synced.kind,
    )
    if canary_percent is not None:
        from ai_how.deployers.kserve import KServeDeployer

        assert isinstance(deployer, KServeDeployer)
        progress(f"sending {canary_percent}% of {ref.name}'s traffic to v{version}")
        rolled = deployer.canary(request, canary_percent)
        return {
            "model": ref.name,
            "ref": str(ref),
            "version": version,
            "kind": synced.kind,
            "storage_uri": synced.uri,
            "synced_now": synced.synced_now,
            "backend": deployer.name,
            "endpoint": rolled.endpoint,
            "role": rolled.details["role"],
            "checks": [],
            "ready_seconds": round(rolled.ready_seconds, 3),
        }
    progress(f"starting {ref.name} v{version} on {deployer.name} as a candidate beside production")
    candidate = deployer.deploy(request)
    client = httpx.Client(timeout=TIMEOUT)
    checks = [
        served_version_check(client, candidate.endpoint, ref.name, version),
        *protocol_checks(candidate.endpoint, ref.name, synced.kind),
    ]
    failed = [c for c in checks if not c.ok]
    if failed:
        deployer.discard(ref.name, version)
        raise AiHowError(
            f"{ref.name} v{version} failed its checks beside production, which is unchanged: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            fix=f"see {run_dir / 'server.log'} (local) or the predictor's logs (KServe)",
        )
    progress(f"{len(checks)} checks passed; switching production to v{version}")
    deployment = deployer.promote(ref.name, version)
    result = {
        "model": ref.name,
        "ref": str(ref),
        "version": version,
        "kind": synced.kind,
        "storage_uri": synced.uri,
        "synced_now": synced.synced_now,
        "backend": deployer.name,
        "endpoint": deployment.endpoint,
        "role": "production",
        "checks": [c.to_json() for c in checks],
        "ready_seconds": round(candidate.ready_seconds + deployment.ready_seconds, 3),
    }
    with store.transaction() as doc:
        doc.setdefault("deploys", []).append(
            {k: result[k] for k in ("model", "version", "backend", "endpoint")} | {"at": stamp}
        )
    return result
