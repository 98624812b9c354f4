"""The monitoring stack end to end, every piece real: `ai-how stack up` with Prometheus, Alertmanager, node
exporter, the SLURM and pipeline exporters and MLflow; a pipeline trained on the local SLURM; an LLM and the
digits CNN served under load; a webhook receiver for alerts; a second ("cloud") Prometheus federating the
first.

What cannot run here is replaced by its recorded output, in the real exporter's format: the DCGM exporter
(no GPU) is a file of its exposition lines served over HTTP to the cloud Prometheus
(fixtures/dcgm-exporter.prom).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ai_how.bench.payloads import ZERO
from ai_how.procs import free_port, read_pid
from tests.pipeline.test_registry_deploy import LOG_TRANSFORMERS, log
from tests.services import Env, S3Server, make_env
from tests.serving.llm_fixtures import tiny_llama

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).parent / "fixtures"
HPC_CLUSTER = "workstation"  # clusters.hpc.name in tests/services.py's configs
CLOUD_CLUSTER = "inference-cluster"


@dataclass
class Received:
    """What an HTTP endpoint got (the webhook receiver) or serves (the DCGM stand-in)."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b""


@pytest.fixture
def webhook() -> Iterator[Received]:
    got = Received()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            got.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:  # the DCGM stand-in's /metrics
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(got.body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield got
    server.shutdown()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def query_range(prometheus: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = {"query": expr, "start": start, "end": end, "step": 2}
    answer = httpx.get(f"{prometheus}/api/v1/query_range", params=params, timeout=30).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def monitored_env(tmp_path: Path, s3_server: S3Server, hook: Received) -> tuple[Env, dict[str, int]]:
    env = make_env(tmp_path, s3=s3_server, slurm=True)
    ports = {name: free_port() for name in ("prometheus", "alertmanager", "node", "slurm", "pipeline")}
    data = yaml.safe_load(env.config.read_text())
    data["monitoring"] = {
        "alert_for": "2s",
        "prometheus": {
            "enabled": True,
            "port": ports["prometheus"],
            "scrape_interval": "2s",
            "evaluation_interval": "2s",
        },
        "alertmanager": {
            "enabled": True,
            "port": ports["alertmanager"],
            "group_wait": "1s",
            "group_interval": "2s",  # resolutions are told at the group's next interval
            "receivers": [{"name": "on-call", "webhook_url_env": "E2E_WEBHOOK_URL"}],
        },
        "exporters": {
            "node_exporter_port": ports["node"],
            "slurm_port": ports["slurm"],
            "pipeline_port": ports["pipeline"],
        },
        "grafana": {"enabled": False},
    }
    env.config.write_text(yaml.safe_dump(data, sort_keys=False))
    env.env["E2E_WEBHOOK_URL"] = f"{hook.url}/alerts"
    return env, ports


def start_cloud_prometheus(
    tmp_path: Path, hpc_prometheus: str, dcgm: Received, node_port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """The cloud side's Prometheus as the generated config makes it: the federation job ai-how renders
    (kube-prometheus-stack's additionalScrapeConfigs), DCGM and node series labelled with the cloud cluster."""
    from ai_how.config.models import Monitoring
    from ai_how.monitoring.prometheus_config import federation_job

    dcgm.body = (FIXTURES / "dcgm-exporter.prom").read_bytes()
    monitoring = Monitoring.model_validate(
        {"federation": {"enabled": True, "hpc_prometheus_url": hpc_prometheus}}
    )
    relabel = [{"target_label": "cluster", "replacement": CLOUD_CLUSTER}]
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            federation_job(monitoring),
            {
                "job_name": "dcgm",
                "static_configs": [{"targets": [dcgm.url.removeprefix("http://")]}],
                "relabel_configs": relabel,
            },
            {
                "job_name": "node",
                "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}],
                "relabel_configs": relabel,
            },
        ],
    }
    root = tmp_path / "cloud-prometheus"
    root.mkdir()
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(root / "log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("the cloud Prometheus", lambda: _ready(url), timeout_s=60)
    return process, url


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def load(endpoint: str) -> None:
    """Traffic of every kind the dashboards show: V1/V2 digits, OpenAI completions, a client error."""
    with httpx.Client(timeout=60) as client:
        for _ in range(20):
            assert (
                client.post(f"{endpoint}/v1/models/digits:predict", json={"instances": [ZERO]}).status_code
                == 200
            )
            v2 = {"inputs": [{"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ZERO}]}
            assert client.post(f"{endpoint}/v2/models/digits/infer", json=v2).status_code == 200
        for i in range(6):
            completion = client.post(
                f"{endpoint}/openai/v1/completions",
                json={"model": "tiny-llm", "prompt": f"hello number {i}", "max_tokens": 8},
            )
            assert completion.status_code == 200, completion.text
        assert client.post(f"{endpoint}/v1/models/digits:predict", json={"nope": 1}).status_code == 400


def test_the_stack_watches_training_and_serving_and_alerts_on_a_dead_model_server(
    tmp_path: Path, slurm: None, s3_server: S3Server, webhook: Received
) -> None:
    env, ports = monitored_env(tmp_path, s3_server, webhook)
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    started = time.time()
    with env.stack():
        # Every scrape target the config implies is up.
        jobs = {"prometheus", "alertmanager", "node", "mlflow", "slurm", "pipeline"}
        wait_for(
            f"targets {sorted(jobs)} up",
            lambda: jobs <= {r["metric"]["job"] for r in query(prometheus, "up == 1")},
            timeout_s=90,
        )
        # Train on SLURM (a GRES job), register, sync, deploy, verify, promote; then an LLM beside it.
        result = env.pipeline(
            "--workload", "digits-cnn", "--gpus", "1", "--model-name", "digits", "--set", "epochs=4"
        )
        assert env.run_doc(env.latest_run())["status"] == "succeeded", result.stdout
        log(env, LOG_TRANSFORMERS, str(tiny_llama(tmp_path / "llm")), "tiny-llm")
        endpoint = json.loads(env.cli("deploy", "tiny-llm/1", "-c", str(env.config), "--json").stdout)[
            "endpoint"
        ]
        load(endpoint)
        # The pipeline's state reached Prometheus through the pipeline exporter.
        wait_for(
            "the production version of digits",
            lambda: query(prometheus, 'ai_how_model_production_version{model="digits"} == 1'),
        )
        status = env.cli("status", "-c", str(env.config), "--json")
        report = json.loads(status.stdout)
        assert status.returncode == 0 and report["healthy"], status.stdout
        names = {c["name"] for c in report["components"]}
        assert {"SLURM nodes", "Prometheus targets", "mlflow", "alerts"} <= names

        # Federation: the cloud Prometheus holds the HPC side's series with their original labels.
        cloud, cloud_url = start_cloud_prometheus(tmp_path, prometheus, webhook, ports["node"])
        try:
            federated = wait_for(
                "federated SLURM series",
                lambda: query(cloud_url, 'slurm_nodes_total{job="slurm"}'),
                timeout_s=60,
            )
            assert federated[0]["metric"]["cluster"] == HPC_CLUSTER  # honor_labels kept the HPC label
            wait_for(  # its own scrape of the DCGM stand-in may come a moment after the federation
                "DCGM series in the cloud Prometheus",
                lambda: query(cloud_url, f'DCGM_FI_DEV_GPU_UTIL{{cluster="{CLOUD_CLUSTER}"}}'),
                timeout_s=30,
            )

            # A model server dies: the alert reaches Alertmanager and the webhook; `ai-how status` says so.
            os.kill(_production_pid(env), signal.SIGKILL)
            fired = wait_for(
                "ModelServerDown at the webhook",
                lambda: _alert(webhook, "ModelServerDown", "firing"),
                timeout_s=90,
            )
            assert fired["labels"]["severity"] == "critical" and fired["labels"]["job"] == "model-servers"
            down = env.cli("status", "-c", str(env.config), "--json", check=False)
            assert down.returncode == 1
            assert any(c["name"] == "alert ModelServerDown" for c in json.loads(down.stdout)["components"])
            # Serving it again resolves the alert.
            env.cli("deploy", "digits@production", "-c", str(env.config), "--json")
            wait_for(
                "ModelServerDown no longer firing in Prometheus",
                lambda: not query(prometheus, 'ALERTS{alertname="ModelServerDown", alertstate="firing"}'),
                timeout_s=60,
            )
            wait_for(
                "ModelServerDown resolved at the webhook",
                lambda: _alert(webhook, "ModelServerDown", "resolved"),
                timeout_s=90,
            )

            # Every panel of every generated dashboard has data in one of the two Prometheus servers.
            from ai_how.config.loader import load_config
            from ai_how.monitoring.dashboards import dashboards, panel_queries

            config = load_config(env.config, env=env.env).config
            empty = []
            end = time.time()
            for panel in panel_queries(dashboards(config)):
                if not (
                    query_range(prometheus, panel.expr, started, end)
                    or query_range(cloud_url, panel.expr, started, end)
                ):
                    empty.append(f"{panel.dashboard} / {panel.panel}: {panel.expr}")
            assert not empty, "panels without data:\n" + "\n".join(empty)
        finally:
            cloud.terminate()
            cloud.wait(30)


def _production_pid(env: Env) -> int:
    state = json.loads((env.state_dir / "serving" / "local.json").read_text())["data"]
    pid = read_pid(Path(state["production"]["pidfile"]))
    assert pid is not None
    return pid


def _alert(hook: Received, name: str, status: str) -> dict[str, Any] | None:
    for post in hook.posts:
        for alert in post.get("alerts", []):
            if alert["labels"].get("alertname") == name and alert["status"] == status:
                return dict(alert)
    return None


def test_stack_status_shows_targets_and_metrics_survive_stack_down_and_up(
    tmp_path: Path, s3_server: S3Server, webhook: Received
) -> None:
    env, ports = monitored_env(tmp_path, s3_server, webhook)
    data = yaml.safe_load(env.config.read_text())
    data["clusters"]["hpc"] = {"name": HPC_CLUSTER, "scheduler": "local"}  # no SLURM exporter here
    env.config.write_text(yaml.safe_dump(data, sort_keys=False))
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    with env.stack():
        wait_for(
            "Prometheus scraping itself", lambda: query(prometheus, 'up{job="prometheus"} == 1'), timeout_s=60
        )
        recorded_at = time.time()
        statuses = {
            s["name"]: s
            for s in json.loads(env.cli("stack", "status", "-c", str(env.config), "--json").stdout)
        }
        assert statuses["prometheus"]["healthy"]
        assert (
            statuses["prometheus"]["note"].endswith("targets up")
            or "targets up; down:" in statuses["prometheus"]["note"]
        )
        assert {"alertmanager", "node-exporter", "pipeline-exporter", "mlflow"} <= set(statuses)
    # `stack down` stopped everything; the TSDB stayed in the state directory.
    assert not _ready(prometheus)
    with env.stack():
        wait_for("Prometheus again", lambda: _ready(prometheus), timeout_s=60)
        answer = httpx.get(
            f"{prometheus}/api/v1/query",
            params={"query": 'up{job="prometheus"}', "time": recorded_at},
            timeout=10,
        ).json()
        assert answer["data"]["result"], "the samples from before `stack down` are gone"
