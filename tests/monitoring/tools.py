"""Shared by the generated-monitoring tests: the real promtool/amtool, the example config, the schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from tests.conftest import EXAMPLE, REPO

SCHEMAS = REPO.parent / "shared" / "schemas"
KUBE_PROMETHEUS_DEFAULTS = SCHEMAS / "charts" / "kube-prometheus-stack-88.5.3.values.yaml"


def example_config() -> ClusterConfig:
    return load_config(EXAMPLE, env={}).config


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: prometheus / prometheus-alertmanager; `make setup`)")
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"


def schemas_dir(relative: str) -> Path:
    path = SCHEMAS / relative
    if not path.exists():
        pytest.skip(f"the reference schemas are not here: {path} (shared schemas not checked out)")
    return path
