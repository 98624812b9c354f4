"""``ai-how hpc|cloud start|stop|status|destroy`` end to end on libvirt's shared test:///default driver."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ai_how.cli.main import app

libvirt = pytest.importorskip("libvirt")
runner = CliRunner()
URI = "test:///default"


@pytest.fixture
def shared_driver() -> Iterator[Any]:
    """test:///default keeps its objects while any connection is open: hold one across the commands."""
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@pytest.fixture
def small_hpc(tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]) -> Path:
    image = tmp_path / "hpc-base.qcow2"
    image.write_bytes(b"QFI\xfb")
    return write_config(
        {
            "version": "1.0",
            "metadata": {"name": "cli-test"},
            "clusters": {
                "hpc": {
                    "name": "cli-hpc",
                    "base_image_path": str(image),
                    "scheduler": "slurm",
                    "network": {"subnet": "10.77.0.0/24", "bridge": "aihowtest77"},
                    "controller": {
                        "name": "cli-ctl",
                        "cpu_cores": 1,
                        "memory_gb": 1,
                        "disk_gb": 10,
                        "ip_address": "10.77.0.10",
                    },
                }
            },
        }
    )


def _run(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def test_lifecycle_through_the_cli(shared_driver: Any, small_hpc: Path) -> None:
    started = _run("hpc", "start", str(small_hpc), "--uri", URI, "--json")
    assert started.exit_code == 0, started.output
    data = json.loads(started.stdout)
    assert data["vms"][0]["name"] == "cli-ctl" and data["vms"][0]["state"] == "running"
    assert "cli-ctl" in {d.name() for d in shared_driver.listAllDomains()}

    status = _run("hpc", "status", str(small_hpc), "--json")  # the URI recorded at start is reused
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["vms"][0]["ip_address"] == "10.77.0.10"

    stopped = _run("hpc", "stop", str(small_hpc))
    assert stopped.exit_code == 0 and "cli-ctl" in stopped.stdout
    assert _run("hpc", "status", str(small_hpc)).exit_code == 1  # not every VM is running

    kept = _run("hpc", "destroy", str(small_hpc), input="n\n")
    assert kept.exit_code == 1
    assert "cli-ctl" in {d.name() for d in shared_driver.listAllDomains()}

    gone = _run("hpc", "destroy", str(small_hpc), "--yes", "--json")
    assert gone.exit_code == 0, gone.output
    assert {r["kind"] for r in json.loads(gone.stdout)["removed"]} >= {"domain", "network", "pool", "volume"}
    assert "cli-ctl" not in {d.name() for d in shared_driver.listAllDomains()}
    assert "aihow-cli-hpc" not in {n.name() for n in shared_driver.listAllNetworks()}
    again = _run("hpc", "destroy", str(small_hpc), "--yes")
    assert again.exit_code == 0 and "nothing to destroy" in again.stdout


def test_dry_run_prints_the_xml_and_creates_nothing(shared_driver: Any, small_hpc: Path) -> None:
    result = _run("hpc", "start", str(small_hpc), "--uri", URI, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "<network>" in result.stdout and "<domain " in result.stdout and "aihowtest77" in result.stdout
    assert "cli-ctl" not in {d.name() for d in shared_driver.listAllDomains()}


def test_missing_base_image_is_one_line_and_creates_nothing(
    shared_driver: Any, small_hpc: Path, tmp_path: Path
) -> None:
    (tmp_path / "hpc-base.qcow2").unlink()
    result = _run("hpc", "start", str(small_hpc), "--uri", URI)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "does not exist" in result.output and "ai-how image build hpc-base" in result.output
    assert "nothing was created" in result.output
    assert "aihow-cli-hpc" not in {n.name() for n in shared_driver.listAllNetworks()}


def test_unreachable_uri_is_one_line(small_hpc: Path) -> None:
    result = _run("hpc", "status", str(small_hpc), "--uri", "qemu+unix:///system?socket=/nonexistent/sock")
    assert result.exit_code == 1
    assert "cannot reach libvirt" in result.output and "Traceback" not in result.output


def test_missing_cluster_section_names_the_fix(small_hpc: Path) -> None:
    result = _run("cloud", "status", str(small_hpc), "--uri", URI)
    assert result.exit_code == 1
    assert "no clusters.cloud section" in result.output


def test_destroy_works_after_the_cluster_left_the_config(shared_driver: Any, small_hpc: Path) -> None:
    assert _run("hpc", "start", str(small_hpc), "--uri", URI).exit_code == 0
    small_hpc.write_text("version: '1.0'\nmetadata: {name: cli-test}\n")  # the hpc section is gone
    gone = _run("hpc", "destroy", str(small_hpc), "--yes")
    assert gone.exit_code == 0, gone.output
    assert "cli-ctl" not in {d.name() for d in shared_driver.listAllDomains()}
    assert "aihow-cli-hpc" not in {n.name() for n in shared_driver.listAllNetworks()}
    assert "aihow-cli-hpc" not in {p.name() for p in shared_driver.listAllStoragePools()}
