"""The local deployer with real model servers: a new version serves beside production until promoted,
the switch drops no request, and a discarded candidate never touches production."""

from __future__ import annotations

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
from ai_how.deployers.local import LocalDeployer, served_version
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

    def request(self, version: int) -> DeployRequest:
        return DeployRequest(
            model_name="digits",
            version=version,
            storage_uri=(self.store_root / "digits" / f"v{version}").as_uri(),
            config_path=self.config_path,
            run_dir=self.tmp,
            log_path=self.tmp / f"server-v{version}.log",
            run_id=f"run-{version}",
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
    config_path = write_config(tmp / "cluster.yaml", mlflow_port=free_port(), serving_port=free_port())
    deployer = LocalDeployer(load_config(config_path).config, Layout(tmp / "state"))
    yield Setup(deployer, config_path, store_root, tmp)
    for _, record in deployer.servers():
        deployer.undeploy(record.model)


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
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        f"{production}/v1/models/digits:predict", json={"instances": [ZERO]}
                    )
                    answers.append((response.status_code, response.headers.get("x-ai-how-model-version")))
                except httpx.HTTPError as exc:
                    answers.append((0, type(exc).__name__))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        promoted = deployer.promote("digits", 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
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
