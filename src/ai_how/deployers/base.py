"""The deployer interface and registry (mlops.serving.backend: local | kserve)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ai_how.errors import AiHowError

if TYPE_CHECKING:
    from ai_how.config.models import ClusterConfig
    from ai_how.layout import Layout


@dataclass
class DeployRequest:
    model_name: str
    version: int
    storage_uri: str
    config_path: Path
    run_dir: Path
    log_path: Path
    run_id: str
    tracking_uri: str
    manifest_sha256: str
    kind: str = "classifier"  # what the version is: "classifier" | "llm" (picks the KServe runtime)


@dataclass
class Deployment:
    endpoint: str  # base URL: V1 at /v1/models/<name>:predict, V2 at /v2/models/<name>/infer
    model_name: str
    version: int
    ready_seconds: float
    details: dict[str, str] = field(default_factory=dict)


class DeployError(AiHowError):
    pass


class Deployer(Protocol):
    """Serves model versions: a new one first as a candidate beside production, then promoted."""

    name: str

    def deploy(self, request: DeployRequest) -> Deployment:
        """Bring the version up as a candidate; whatever serves production keeps serving it."""
        ...

    def promote(self, model_name: str, version: int) -> Deployment:
        """Make the (verified) candidate the production server; the previous one goes only then."""
        ...

    def discard(self, model_name: str, version: int) -> bool:
        """Remove a candidate that will not be promoted."""
        ...

    def serves(self, model_name: str, version: int) -> bool:
        """Whether ``version`` runs here, as a candidate or in production."""
        ...

    def undeploy(self, model_name: str) -> bool: ...

    def endpoint(self, model_name: str) -> str | None:
        """The production endpoint of ``model_name`` (None when nothing serves it)."""
        ...


DeployerFactory = Callable[["ClusterConfig", "Layout"], Deployer]


def _local(config: ClusterConfig, layout: Layout) -> Deployer:
    from ai_how.deployers.local import LocalDeployer

    return LocalDeployer(config, layout)


def _kserve(config: ClusterConfig, layout: Layout) -> Deployer:
    from ai_how.deployers.kserve import KServeDeployer

    return KServeDeployer(config, layout)


# The one registry of deployers, keyed by mlops.serving.backend; imports are lazy.
DEPLOYERS: dict[str, DeployerFactory] = {"local": _local, "kserve": _kserve}


def deployer_for(config: ClusterConfig, layout: Layout) -> Deployer:
    return DEPLOYERS[config.mlops.serving.backend](config, layout)
