"""The local deployer with real model servers: a new version serves beside production until promoted,
the switch drops no request, a discarded candidate never touches production, and several models share
the production port, each switched (or undeployed) without touching the others."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ai_how.bench.payloads import ZERO
from ai_how.config.loader import load_config
from ai_how.deployers.base import DeployError, DeployRequest
from ai_how.deployers.local import LocalDeployer, _started_with, served_version
from ai_how.layout import Layout
from ai_how.objectstore.base import open_store
from ai_how.objectstore.sync import sync_directory
from tests.services import free_port, write_config


@dataclass
class Setup:
    deployer: LocalDeployer
    config_path: Path
    store_root: Path
    tmp: Path

    def request(self, version: int, model: str = "digits") -> DeployRequest:
        return DeployRequest(
            model_name=model,
            version=version,
            storage_uri=(self.store_root / model / f"v{version}").as_uri(),
            config_path=self.config_path,
            run_dir=self.tmp,
            log_path=self.tmp / f"server-{model}-v{version}.log",
            run_id=f"run-{model}-{version}",
            tracking_uri="http://127.0.0.1:1",
            manifest_sha256="",
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("local-deployer")
    trained = tmp / "trained"
    subprocess.run(
        [sys.executable, "-m", "ai_how.workloads", "digits-cnn", "--output", str(trained), "--epochs", "3"],
        check=True,
        capture_output=True,
    )
    store_root = tmp / "objects"
    store, _ = open_store(store_root.as_uri())
    for version in (1, 2, 3):  # the same files, three registered versions (the manifest names each)
        sync_directory(trained / "model", store, f"digits/v{version}", meta={"version": version})
    sync_directory(trained / "model", store, "other/v1", meta={"version": 1})  # a second model name
    config_path = write_config(tmp / "cluster.yaml", mlflow_port=free_port(), serving_port=free_port())
    config = load_config(config_path).config
    config.mlops.serving.kv_cache_gb = 1.5  # on every server's command line (a classifier ignores it)
    deployer = LocalDeployer(config, Layout(tmp / "state"))
    yield Setup(deployer, config_path, store_root, tmp)
    deployer.stop_all()


@contextlib.contextmanager
def hammering(base_url: str, model: str) -> Iterator[list[tuple[int, str | None]]]:
    """Predict requests to ``model`` from two threads while the block runs: (status, version header)."""
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        f"{base_url}/v1/models/{model}:predict", json={"instances": [ZERO]}
                    )
                    answers.append((response.status_code, response.headers.get("x-ai-how-model-version")))
                except httpx.HTTPError as exc:
                    answers.append((0, type(exc).__name__))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_a_candidate_serves_beside_production_and_the_switch_drops_no_request(setup: Setup) -> None:
    deployer = setup.deployer
    first = deployer.deploy(setup.request(1))
    assert deployer.endpoint("digits") is None  # a candidate is not production
    assert served_version(first.endpoint, "digits") == "1"
    deployer.promote("digits", 1)
    production = deployer.base_url
    assert deployer.endpoint("digits") == production
    assert served_version(production, "digits") == "1"

    second = deployer.deploy(setup.request(2))
    assert second.endpoint != production
    assert served_version(second.endpoint, "digits") == "2"
    assert served_version(production, "digits") == "1"  # the old version keeps production until promoted

    # Requests hit production the whole time the switch happens: every one is answered correctly.
    with hammering(production, "digits") as answers:
        promoted = deployer.promote("digits", 2)
    assert promoted.endpoint == production and promoted.details["replaced"] == "digits v1"
    assert answers and all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:5]
    assert {version for _, version in answers} <= {"1", "2"}
    assert served_version(production, "digits") == "2"
    assert [(role, r.version) for role, r in deployer.servers()] == [("production", 2)]
    # A resumed promote (the switch was done, the alias was not) finds the work done.
    assert deployer.promote("digits", 2).endpoint == production


def test_a_discarded_candidate_leaves_production_alone(setup: Setup) -> None:
    deployer = setup.deployer
    production = deployer.production()
    assert production is not None
    candidate = deployer.deploy(setup.request(3))
    assert deployer.serves("digits", 3)
    (record,) = [r for _, r in deployer.servers() if r.version == 3]
    assert _started_with(Path(record.pidfile))["--kv-cache-gb"] == "1.5"  # mlops.serving.kv_cache_gb
    assert deployer.discard("digits", 3)
    assert not deployer.serves("digits", 3) and deployer.serves("digits", production.version)
    assert served_version(candidate.endpoint, "digits") is None
    assert served_version(deployer.base_url, "digits") == str(production.version)
    with pytest.raises(DeployError, match="no running candidate"):
        deployer.promote("digits", 3)


def test_a_server_that_reports_another_version_is_refused(setup: Setup) -> None:
    request = setup.request(1)
    request.version = 7  # the store at .../v1 holds version 1: the server says so and deploy refuses it
    with pytest.raises(DeployError, match="reports digits version '1', not 7"):
        setup.deployer.deploy(request)
    assert setup.deployer.candidate("digits", 7) is None


def metadata_versions(base_url: str, model: str) -> list[str] | None:
    """The versions V2 metadata lists for ``model`` (None when the server does not serve it)."""
    response = httpx.get(f"{base_url}/v2/models/{model}", timeout=10)
    return response.json()["versions"] if response.status_code == 200 else None


def test_several_models_share_the_production_port_and_each_changes_alone(setup: Setup) -> None:
    deployer = setup.deployer
    production = deployer.base_url
    deployer.deploy(setup.request(1))
    deployer.promote("digits", 1)
    other = deployer.deploy(setup.request(1, "other"))
    assert served_version(other.endpoint, "digits") == "1"  # the candidate carries production's models
    assert deployer.endpoint("other") is None and deployer.endpoint("digits") == production
    promoted = deployer.promote("other", 1)
    assert "replaced" not in promoted.details  # other joined production; digits was not evicted
    assert metadata_versions(production, "digits") == ["1"]
    assert metadata_versions(production, "other") == ["1"]
    assert deployer.endpoint("other") == deployer.endpoint("digits") == production
    assert sorted((r.model, r.version) for _, r in deployer.servers()) == [("digits", 1), ("other", 1)]

    later = deployer.deploy(setup.request(3))  # started beside other v1: promoted only after other leaves
    # A rollback-style switch of digits keeps other, which answers throughout.
    deployer.deploy(setup.request(2))
    with hammering(production, "other") as answers:
        assert deployer.promote("digits", 2).details["replaced"] == "digits v1"
    assert answers and all(answer == (200, "1") for answer in answers), [
        a for a in answers if a != (200, "1")
    ][:5]
    assert metadata_versions(production, "digits") == ["2"]
    assert metadata_versions(production, "other") == ["1"]
    assert deployer.serves("other", 1) and deployer.serves("digits", 2) and not deployer.serves("digits", 1)

    # Undeploying other switches production to a server without it; digits answers throughout.
    with hammering(production, "digits") as answers:
        assert deployer.undeploy("other")
    assert answers and all(answer == (200, "2") for answer in answers), [
        a for a in answers if a != (200, "2")
    ][:5]
    assert metadata_versions(production, "other") is None and deployer.endpoint("other") is None
    assert metadata_versions(production, "digits") == ["2"] and deployer.endpoint("digits") == production

    # The candidate started beside other v1 is started again without it before it takes production.
    assert served_version(later.endpoint, "other") == "1"
    deployer.promote("digits", 3)
    assert metadata_versions(production, "digits") == ["3"]
    assert metadata_versions(production, "other") is None
    assert [(role, r.model, r.version) for role, r in deployer.servers()] == [("production", "digits", 3)]


def test_a_production_record_from_before_several_models_still_reads(setup: Setup) -> None:
    deployer = setup.deployer
    production = deployer.production()
    assert production is not None and production.alive()
    single = {k: v for k, v in production.to_json().items() if k not in ("models", "config")}
    deployer.store.write("serving/local", {"production": single, "candidates": {}})
    try:
        legacy = deployer.production()
        assert legacy is not None and list(legacy.models) == [production.model]
        assert deployer.endpoint(production.model) == deployer.base_url
        assert deployer.serves(production.model, production.version) and deployer.endpoint("other") is None
        # Another model joining it takes the model's URI from the flags the server was started with.
        others = deployer._production_others(legacy, "other")
        assert others == {production.model: production.models[production.model]}
    finally:
        deployer.store.write("serving/local", {"production": production.to_json(), "candidates": {}})
