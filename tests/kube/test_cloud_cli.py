"""``ai-how cloud deploy|kubeconfig|status`` around Kubernetes: refusals, the kubeconfig, and health
read through the Kubernetes client from the stand-in API server (tests/kube/standin_api.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ai_how.cli.main import app
from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.kube.ingress import ingress_chart, ingress_values
from ai_how.kube.kubeconfig import merge_into
from tests.kube.standin_api import standin_api

libvirt = pytest.importorskip("libvirt")
runner = CliRunner()
URI = "test:///default"


@pytest.fixture
def shared_driver() -> Iterator[Any]:
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(URI)
    yield conn
    conn.close()


def _cloud(tmp_path: Path, kubeconfig: Path | None = None) -> dict[str, Any]:
    image = tmp_path / "cloud-base.qcow2"
    image.write_bytes(b"QFI\xfb")
    cloud: dict[str, Any] = {
        "name": "cli-cloud",
        "base_image_path": str(image),
        "network": {"subnet": "10.78.0.0/24", "bridge": "aihowtest78"},
        "control_plane": {
            "name": "control-plane",
            "cpu_cores": 2,
            "memory_gb": 1,
            "disk_gb": 10,
            "ip_address": "10.78.0.10",
        },
        "worker_nodes": {
            "cpu": [
                {
                    "name": "cpu-worker",
                    "worker_type": "cpu",
                    "cpu_cores": 2,
                    "memory_gb": 1,
                    "disk_gb": 10,
                    "ip": "10.78.0.11",
                }
            ]
        },
    }
    if kubeconfig is not None:
        cloud["kubeconfig"] = str(kubeconfig)
    host = {"cpu_cores": 16, "memory_gb": 64, "disk_gb": 500}  # the workstation these VMs would run on
    return {"version": "1.0", "metadata": {"name": "cli-cloud"}, "host": host, "clusters": {"cloud": cloud}}


def test_deploy_refuses_until_the_vms_run(
    shared_driver: Any, tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]
) -> None:
    config = write_config(_cloud(tmp_path))
    result = runner.invoke(app, ["cloud", "deploy", str(config), "--uri", URI])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not all running" in result.output and "ai-how cloud start" in result.output


def test_kubeconfig_before_deploy_names_the_fix(
    tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]
) -> None:
    result = runner.invoke(app, ["cloud", "kubeconfig", str(write_config(_cloud(tmp_path)))])
    assert result.exit_code == 1 and "ai-how cloud deploy" in result.output


def test_status_adds_kubernetes_health_once_deployed(
    shared_driver: Any, tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]
) -> None:
    with standin_api("nodes-notready.json", "pods-failing.json") as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        config = write_config(_cloud(tmp_path, kubeconfig))
        started = runner.invoke(app, ["cloud", "start", str(config), "--uri", URI])
        assert started.exit_code == 0, started.output
        status = runner.invoke(app, ["cloud", "status", str(config), "--json"])
    assert status.exit_code == 1  # VMs run, but a node is NotReady and pods fail
    data = json.loads(status.stdout)
    assert [v["state"] for v in data["vms"]] == ["running", "running"]
    kube = data["kubernetes"]
    assert kube["healthy"] is False
    assert any(not n["ready"] for n in kube["nodes"])

    printed = runner.invoke(app, ["cloud", "kubeconfig", str(config)])
    assert printed.exit_code == 0 and printed.stdout.strip() == str(kubeconfig)


def test_status_says_when_the_api_server_is_unreachable(
    shared_driver: Any, tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]
) -> None:
    with standin_api() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    config = write_config(_cloud(tmp_path, kubeconfig))  # the server is gone now
    assert runner.invoke(app, ["cloud", "start", str(config), "--uri", URI]).exit_code == 0
    status = runner.invoke(app, ["cloud", "status", str(config)])
    assert status.exit_code == 1
    assert "Kubernetes:" in status.output and "Traceback" not in status.output


def test_merge_into_adds_replaces_and_keeps(tmp_path: Path) -> None:
    def kubeconfig(name: str, server: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": server}}],
            "users": [{"name": f"{name}-admin", "user": {"token": "t"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
            "current-context": name,
        }

    target = tmp_path / ".kube" / "config"
    target.parent.mkdir()
    target.write_text(yaml.safe_dump(kubeconfig("mine", "https://10.0.0.1:6443")))
    source = tmp_path / "admin.conf"
    source.write_text(yaml.safe_dump(kubeconfig("cluster.local", "https://10.78.0.10:6443")))
    merge_into(source, target)
    merge_into(source, target)  # idempotent: the same names are replaced, not duplicated
    merged = yaml.safe_load(target.read_text())
    assert [c["name"] for c in merged["clusters"]] == ["mine", "cluster.local"]
    assert merged["current-context"] == "mine"  # the user's choice stays
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
    assert (tmp_path / ".kube" / "config.bak").is_file()


def test_ingress_values_follow_the_config(
    example_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    def config_of(data: dict[str, Any]) -> ClusterConfig:
        return load_config(write_config(data)).config

    values = ingress_values(config_of(example_data))
    assert values["controller"]["replicaCount"] == 2
    assert values["controller"]["service"] == {"type": "LoadBalancer", "loadBalancerIP": "192.168.200.100"}
    del example_data["clusters"]["cloud"]["kubernetes_config"]["ingress"]["load_balancer_ip"]
    assert ingress_values(config_of(example_data))["controller"]["service"]["type"] == "NodePort"
    example_data["clusters"]["cloud"]["kubernetes_config"]["ingress"]["enabled"] = False
    assert ingress_chart(config_of(example_data)) is None
