"""Shared test helpers: repository paths and config files written from plain data."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how import failpoints

pytest_plugins = ["tests.services"]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "example-cluster.yaml"
LOCAL = REPO / "config" / "local.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``): every test that uses the machine's one SLURM runs on the same
    worker (``--dist loadgroup``), so no worker stops SLURM at its end while another still uses it."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        parameters = callspec.params if callspec is not None else {}  # a parameter may be named slurm too
        if "slurm" in getattr(item, "fixturenames", ()) and "slurm" not in parameters:
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's ~/.ai-how, and boto3 never probes the EC2 metadata address."""
    monkeypatch.setenv("AI_HOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _fresh_failpoint_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failpoint hits are counted per process: each test starts from zero, whatever ran before it."""
    monkeypatch.setattr(failpoints, "_hits", Counter())


@pytest.fixture
def example_data() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    counter = iter(range(1_000_000))

    def write(data: dict[str, Any]) -> Path:
        path = tmp_path / f"cluster-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
