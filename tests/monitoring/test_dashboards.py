"""Generated Grafana dashboards: valid JSON with a stated schemaVersion, unique panel ids, every data source
reference resolving to the dashboard's datasource variable (and a provisioned Prometheus), and every panel
expression parsed by the real promtool."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.models import ClusterConfig
from ai_how.monitoring import metrics_catalog as m
from ai_how.monitoring.dashboards import (
    DATASOURCE,
    SCHEMA_VERSION,
    dashboards,
    panel_queries,
    substitute,
)
from ai_how.monitoring.render import dump_yaml, write_render
from tests.monitoring.tools import assert_ok, example_config, promtool

EXPECTED = {
    "cluster-overview", "resource-utilisation", "workload-status", "model-pipeline", "inference", "gpu", "mlflow",
}  # fmt: skip


@pytest.fixture(scope="module")
def config() -> ClusterConfig:
    return example_config()


@pytest.fixture(scope="module")
def rendered(config: ClusterConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render")
    write_render(config, out, state_dir=out / "state")
    return out


@pytest.fixture(scope="module")
def boards(rendered: Path) -> dict[str, dict[str, Any]]:
    """The dashboards as Grafana reads them: parsed back from the rendered files."""
    return {
        p.stem: json.loads(p.read_text())
        for p in sorted((rendered / "grafana" / "dashboards").glob("*.json"))
    }


def test_every_dashboard_is_rendered_with_the_stated_schema_version(
    boards: dict[str, dict[str, Any]],
) -> None:
    assert set(boards) == EXPECTED
    assert SCHEMA_VERSION == 39
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for board in boards.values():
        assert board["schemaVersion"] == 39
        assert board["title"] and board["panels"]
        assert len(board["uid"]) <= 40  # Grafana's limit


def test_panel_ids_are_unique_and_panels_fit_the_grid_without_overlap(
    boards: dict[str, dict[str, Any]],
) -> None:
    for stem, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), stem
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (stem, panel["title"])
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & area, (stem, panel["title"])
            cells |= area


def test_every_datasource_reference_resolves_to_the_datasource_variable(
    boards: dict[str, dict[str, Any]], rendered: Path
) -> None:
    provisioned = yaml.safe_load(
        (rendered / "grafana" / "provisioning" / "datasources" / "ai-how.yml").read_text()
    )
    types = {source["type"] for source in provisioned["datasources"]}
    for stem, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        source = variables["datasource"]
        assert (source["type"], source["query"]) == ("datasource", "prometheus"), stem
        assert source["query"] in types  # the variable finds the provisioned Prometheus
        references = [p["datasource"] for p in board["panels"]]
        references += [t["datasource"] for p in board["panels"] for t in p["targets"]]
        references += [v["datasource"] for v in variables.values() if "datasource" in v]
        for reference in references:
            assert reference == {"type": "prometheus", "uid": "${datasource}"}, stem
            assert reference["uid"].strip("${}") in variables
        for panel in board["panels"]:
            for expr in (t["expr"] for t in panel["targets"]):
                used = set(re.findall(r"\$\{?(\w+)", expr)) - {"__rate_interval", "__interval"}
                assert used <= set(variables), (stem, panel["title"], used)
    assert DATASOURCE == {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_expression_parses(boards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """promtool has no PromQL parser command: one recording rule per panel expression does the job."""
    queries = panel_queries(boards)
    assert len(queries) > 40
    rules = [{"record": f"panel:q{i}", "expr": q.expr} for i, q in enumerate(queries)]
    path = tmp_path / "panels.yml"
    path.write_text(dump_yaml({"groups": [{"name": "panels", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert_ok(result)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_panel_expression_would_be_caught(tmp_path: Path) -> None:
    path = tmp_path / "panels.yml"
    path.write_text(
        dump_yaml({"groups": [{"name": "p", "rules": [{"record": "panel:q", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert promtool("check", "rules", path).returncode != 0


def test_panel_queries_substitute_every_template_variable(boards: dict[str, dict[str, Any]]) -> None:
    queries = panel_queries(boards)
    assert all("$" not in q.expr for q in queries)
    assert {q.dashboard for q in queries} == {b["uid"] for b in boards.values()}
    one = panel_queries(boards, {"cluster": "training-cluster", "__rate_interval": "1m"})
    assert any('cluster=~"training-cluster"' in q.expr and "[1m]" in q.expr for q in one)
    assert substitute(
        'up{cluster=~"${cluster}"}[$__rate_interval]', {"cluster": "a", "__rate_interval": "2m"}
    ) == ('up{cluster=~"a"}[2m]')


def test_the_cluster_overview_shows_both_clusters_side_by_side(boards: dict[str, dict[str, Any]]) -> None:
    panels = boards["cluster-overview"]["panels"]
    hpc = [p for p in panels if p["title"].startswith("HPC (training-cluster)")]
    cloud = [p for p in panels if p["title"].startswith("Cloud (inference-cluster)")]
    assert len(hpc) == len(cloud) >= 6
    assert all(p["gridPos"]["x"] < 12 for p in hpc)
    assert all(p["gridPos"]["x"] >= 12 for p in cloud)
    assert all('cluster="training-cluster"' in t["expr"] for p in hpc for t in p["targets"])
    assert all('cluster="inference-cluster"' in t["expr"] for p in cloud for t in p["targets"])


def test_dashboards_read_the_catalog_s_metrics(boards: dict[str, dict[str, Any]]) -> None:
    text = json.dumps(boards)
    for name in (
        m.bucket(m.REQUEST_LATENCY), m.GENERATION_TOKENS_TOTAL, m.REQUESTS_WAITING, m.DCGM_GPU_UTIL, m.DCGM_GPU_TEMP,
        m.SLURM_QUEUE_PENDING, m.bucket(m.PIPELINE_STAGE_DURATION), m.SYNC_BYTES_TOTAL, m.TRAINING_LOSS,
        m.MLFLOW_REQUESTS_TOTAL, m.bucket(m.TIME_TO_FIRST_TOKEN), m.KV_CACHE_USAGE, m.ENGINE_STEP_ROWS_TOTAL,
        m.ENGINE_DEVICE_SECONDS_TOTAL,
    ):  # fmt: skip
        assert name in text, name


def test_the_inference_dashboard_draws_the_slo(
    config: ClusterConfig, boards: dict[str, dict[str, Any]]
) -> None:
    latency = next(p for p in boards["inference"]["panels"] if p["title"] == "Latency percentiles")
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == config.monitoring.slo.inference_p95_seconds
    assert [t["legendFormat"] for t in latency["targets"]] == [
        "{{model_name}} p50",
        "{{model_name}} p95",
        "{{model_name}} p99",
    ]


def test_provisioning_points_grafana_at_the_rendered_dashboards(rendered: Path) -> None:
    provider = yaml.safe_load(
        (rendered / "grafana" / "provisioning" / "dashboards" / "ai-how.yml").read_text()
    )
    assert provider["apiVersion"] == 1
    path = Path(provider["providers"][0]["options"]["path"])
    assert path == (rendered / "grafana" / "dashboards").resolve()
    assert sorted(p.stem for p in path.glob("*.json")) == sorted(EXPECTED)
    sources = yaml.safe_load(
        (rendered / "grafana" / "provisioning" / "datasources" / "ai-how.yml").read_text()
    )
    assert sources["datasources"][0]["url"] == "http://127.0.0.1:9090"


def test_a_config_without_a_cloud_cluster_gets_the_hpc_column_only(config: ClusterConfig) -> None:
    clusters = config.clusters.model_copy(update={"cloud": None})
    overview = dashboards(config.model_copy(update={"clusters": clusters}))["cluster-overview"]
    titles = [p["title"] for p in overview["panels"]]
    assert not any(t.startswith("Cloud") for t in titles)
    assert any(t.startswith("HPC") for t in titles)
