"""Generated prometheus.yml (HPC side / embedded stack) and the cloud side's federation job, checked by the
real promtool, and `ai-how monitoring render` end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ai_how.cli.main import app
from ai_how.config.loader import load_config
from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.monitoring import metrics_catalog as m
from ai_how.monitoring.prometheus_config import (
    federation_job,
    hpc_cluster_label,
    model_servers_targets_file,
    prometheus_config,
)
from ai_how.monitoring.render import dump_yaml, write_render
from ai_how.monitoring.rules import alert_names, rule_groups
from tests.conftest import EXAMPLE, LOCAL
from tests.monitoring.tools import assert_ok, example_config, promtool, tool


def _jobs(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in document["scrape_configs"]}


def _with_federation(config: ClusterConfig, url: str | None, enabled: bool = True) -> ClusterConfig:
    federation = config.monitoring.federation.model_copy(
        update={"enabled": enabled, "hpc_prometheus_url": url}
    )
    monitoring = config.monitoring.model_copy(update={"federation": federation})
    return config.model_copy(update={"monitoring": monitoring})


def test_the_rendered_prometheus_yml_and_its_rules_pass_promtool(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_render(example_config(), out, state_dir=tmp_path / "state")
    result = promtool("check", "config", out / "prometheus" / "prometheus.yml")
    assert_ok(result)
    assert "SUCCESS: 7 rule files found" in result.stdout  # rule_files resolve beside prometheus.yml


def test_scrape_jobs_are_the_contract_names_with_the_cluster_label(tmp_path: Path) -> None:
    config = example_config()
    document = prometheus_config(config, tmp_path)
    jobs = _jobs(document)
    assert list(jobs) == [
        m.JOB_PROMETHEUS, m.JOB_ALERTMANAGER, m.JOB_NODE, m.JOB_MLFLOW, m.JOB_MODEL_SERVERS, m.JOB_SLURM,
        m.JOB_PIPELINE,
    ]  # fmt: skip
    cluster = hpc_cluster_label(config)
    assert cluster == "training-cluster"
    assert document["global"]["external_labels"]["cluster"] == cluster
    for job in jobs.values():
        assert {"target_label": "cluster", "replacement": cluster} in job["relabel_configs"], job["job_name"]
    assert jobs["slurm"]["static_configs"][0]["targets"] == ["127.0.0.1:9341"]
    assert jobs["pipeline"]["static_configs"][0]["targets"] == ["127.0.0.1:9342"]
    # MLflow from the tracking URI, the HPC VMs' node exporters beside this machine's
    assert jobs["mlflow"]["static_configs"][0]["targets"] == ["192.168.200.11:5000"]
    assert jobs["mlflow"]["metrics_path"] == "/metrics"
    assert jobs["node"]["static_configs"][0]["targets"][0] == "127.0.0.1:9100"
    assert len(jobs["node"]["static_configs"][0]["targets"]) > 1
    assert document["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


def test_model_servers_come_from_the_file_the_stack_writes(tmp_path: Path) -> None:
    jobs = _jobs(prometheus_config(example_config(), tmp_path / "state"))
    files = jobs["model-servers"]["file_sd_configs"][0]["files"]
    assert files == [str(tmp_path / "state" / "monitoring" / "targets" / "model-servers.json")]
    assert model_servers_targets_file(tmp_path / "state") == Path(files[0])
    assert jobs["model-servers"]["metrics_path"] == "/metrics"


def test_a_local_config_has_no_slurm_job_and_its_own_cluster_label(tmp_path: Path) -> None:
    config = load_config(LOCAL, env={}).config
    jobs = _jobs(prometheus_config(config, tmp_path))
    assert "slurm" not in jobs
    assert {"model-servers", "pipeline", "mlflow"} <= set(jobs)
    assert jobs["mlflow"]["static_configs"][0]["targets"] == ["127.0.0.1:5000"]
    assert hpc_cluster_label(config) == "workstation"


def test_an_external_cluster_label_wins(tmp_path: Path) -> None:
    config = example_config()
    prometheus = config.monitoring.prometheus.model_copy(
        update={"external_labels": {"cluster": "hpc", "site": "lab"}}
    )
    config = config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"prometheus": prometheus})}
    )
    document = prometheus_config(config, tmp_path)
    assert document["global"]["external_labels"] == {"cluster": "hpc", "site": "lab"}
    assert _jobs(document)["node"]["relabel_configs"] == [{"target_label": "cluster", "replacement": "hpc"}]


def test_the_federation_job_pulls_the_hpc_series_with_honor_labels(tmp_path: Path) -> None:
    config = _with_federation(example_config(), "http://192.168.100.1:9090")
    job = federation_job(config.monitoring)
    assert job == {
        "job_name": "federate-hpc",
        "honor_labels": True,
        "metrics_path": "/federate",
        "scheme": "http",
        "params": {"match[]": ['{job=~"slurm|node|dcgm|pipeline"}', '{__name__=~"job:.*"}']},
        "static_configs": [{"targets": ["192.168.100.1:9090"]}],
    }
    # as the cloud Prometheus would load it
    path = tmp_path / "cloud.yml"
    path.write_text(dump_yaml({"global": {"scrape_interval": "15s"}, "scrape_configs": [job]}))
    assert_ok(promtool("check", "config", path))


def test_a_federation_url_with_a_path_prefix_keeps_it() -> None:
    job = federation_job(_with_federation(example_config(), "https://hpc.example.org/prometheus/").monitoring)
    assert job is not None
    assert (job["scheme"], job["metrics_path"]) == ("https", "/prometheus/federate")
    assert job["static_configs"] == [{"targets": ["hpc.example.org"]}]


def test_federation_on_without_a_url_is_an_error_naming_the_field() -> None:
    with pytest.raises(AiHowError, match="hpc_prometheus_url"):
        federation_job(_with_federation(example_config(), None).monitoring)
    assert federation_job(_with_federation(example_config(), None, enabled=False).monitoring) is None


def test_monitoring_render_cli_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["--state-dir", str(tmp_path / "state"), "monitoring", "render", "-c", str(EXAMPLE), "-o", str(out),
              "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = set(json.loads(result.stdout)["files"])
    assert {
        "prometheus/prometheus.yml", "prometheus/rules/ai-how-inference.yml", "alertmanager/alertmanager.yml",
        "grafana/dashboards/cluster-overview.json", "grafana/provisioning/dashboards/ai-how.yml",
        "grafana/provisioning/datasources/ai-how.yml", "kubernetes/kube-prometheus-stack.values.yaml",
        "kubernetes/prometheusrules.yaml", "kubernetes/monitors.yaml",
    } <= files  # fmt: skip
    for name in files:
        assert (out / name).is_file()


def test_render_is_deterministic(tmp_path: Path) -> None:
    config = example_config()
    first = write_render(config, tmp_path / "out", state_dir=tmp_path / "state")
    before = {p: p.read_bytes() for p in first}
    write_render(config, tmp_path / "out", state_dir=tmp_path / "state")
    assert {p: p.read_bytes() for p in first} == before


def test_for_override_reaches_the_rendered_rule_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_render(example_config(), out, state_dir=tmp_path, for_override="5s")
    rules = yaml.safe_load((out / "prometheus" / "rules" / "ai-how-nodes.yml").read_text())
    assert rules["groups"][0]["rules"][0]["for"] == "5s"


def test_a_bad_for_override_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["monitoring", "render", "-c", str(EXAMPLE), "-o", str(tmp_path), "--for-override", "soon"]
    )
    assert result.exit_code == 1
    assert "not a duration" in result.output
    assert "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_real_prometheus_loads_the_render_and_evaluates_every_rule(tmp_path: Path) -> None:
    """The rendered file as Prometheus itself reads it: every group loads and evaluates without error,
    and scraped series carry the cluster label."""
    binary = tool("prometheus")
    port = _free_port()
    config = example_config()
    prometheus = config.monitoring.prometheus.model_copy(
        update={"port": port, "scrape_interval": "1s", "evaluation_interval": "1s"}
    )
    config = config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"prometheus": prometheus})}
    )
    out = tmp_path / "out"
    write_render(config, out, state_dir=tmp_path / "state")
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={out / 'prometheus' / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        groups: list[dict[str, Any]] = []
        up: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                groups = _get(f"{base}/rules")["data"]["groups"]
                up = _get(f"{base}/query?query=up%7Bjob%3D%22prometheus%22%7D%3D%3D1")["data"]["result"]
            except OSError:
                groups = []
            rules = [r for g in groups for r in g["rules"]]
            if groups and up and all(r["lastEvaluation"] != "0001-01-01T00:00:00Z" for r in rules):
                break
            time.sleep(0.5)
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
        assert len(groups) == 7
        rules = [r for g in groups for r in g["rules"]]
        loaded = sorted(r["name"] for r in rules if r["type"] == "alerting")
        assert loaded == sorted(alert_names(rule_groups(config.monitoring)))
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        assert up and up[0]["metric"]["cluster"] == "training-cluster"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
