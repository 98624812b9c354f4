"""Grafana dashboards as JSON (``schemaVersion`` 39), built from the metrics catalog, and their provisioning.

Dashboards: cluster overview (HPC and cloud side by side, by the ``cluster`` label), resource
utilisation, workload status, model pipeline, inference, GPU (DCGM) and MLflow. Every panel reads the
data source chosen in the dashboard's ``datasource`` variable (type ``datasource``, any Prometheus), so
the same JSON works with the embedded Prometheus and with kube-prometheus-stack's Grafana.
:func:`panel_queries` gives every panel's PromQL with the template variables substituted, for tests that
run them against a real Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.monitoring import metrics_catalog as m
from ai_how.monitoring.prometheus_config import cloud_cluster_label, hpc_cluster_label
from ai_how.monitoring.promql import eq, regex, selector

SCHEMA_VERSION = 39  # Grafana 10.4+ reads it; newer versions migrate it on load
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
TAG = "ai-how"
RATE = "$__rate_interval"
ALL_CLUSTERS = regex(m.CLUSTER_LABEL, "$cluster")
# What panel_queries puts in place of each template variable by default.
DEFAULT_VARIABLES = {"cluster": ".*", "__rate_interval": "5m", "__interval": "1m"}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    height: int = 8
    thresholds: tuple[float, ...] = ()  # red above these (a line on time series)
    description: str = ""


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL expression of one panel, with template variables substituted."""

    dashboard: str
    panel_id: int
    panel: str
    ref_id: str
    expr: str


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _sel(metric: str, *matchers: str) -> str:
    return selector(metric, ALL_CLUSTERS, *matchers)


def _quantile(quantile: float, histogram: str, by: str, *matchers: str) -> str:
    return (
        f"histogram_quantile({quantile:g}, sum by ({by}, le) "
        f"(rate({_sel(m.bucket(histogram), *matchers)}[{RATE}])))"
    )


# --------------------------------------------------------------------------- JSON builders


def _panel_json(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    targets = [
        {
            "datasource": dict(DATASOURCE),
            "expr": query.expr,
            "legendFormat": query.legend,
            "range": True,
            "refId": chr(ord("A") + index),
        }
        for index, query in enumerate(panel.queries)
    ]
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": value} for value in panel.thresholds]
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "thresholdsStyle": {"mode": "line" if panel.thresholds else "off"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "gridPos": grid,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }


def _layout(panels: list[Panel]) -> list[dict[str, int]]:
    """Left to right, top to bottom, on Grafana's 24-column grid."""
    grids, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        grids.append({"h": panel.height, "w": panel.width, "x": x, "y": y})
        x += panel.width
        row_height = max(row_height, panel.height)
    return grids


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": DATASOURCE_VARIABLE,
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def _cluster_variable() -> dict[str, Any]:
    query = f"label_values({m.UP}, {m.CLUSTER_LABEL})"
    return {
        "name": "cluster",
        "label": "Cluster",
        "type": "query",
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": {"query": query, "refId": "cluster"},
        "current": {},
        "hide": 0,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


def dashboard(uid: str, title: str, panels: list[Panel], *, per_cluster: bool = True) -> dict[str, Any]:
    variables = [_datasource_variable()] + ([_cluster_variable()] if per_cluster else [])
    return {
        "uid": uid,
        "title": title,
        "tags": [TAG],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables},
        "panels": [
            _panel_json(panel, index, grid)
            for index, (panel, grid) in enumerate(zip(panels, _layout(panels), strict=True), start=1)
        ],
    }


# --------------------------------------------------------------------------- dashboards


def _cluster_column(cluster: str, title: str, gpu: Panel) -> list[Panel]:
    c = eq(m.CLUSTER_LABEL, cluster)
    nodes_up = selector(m.UP, c, regex("job", "|".join(m.NODE_JOBS)))
    return [
        Panel(
            f"{title}: targets up",
            (q(f"sum({selector(m.UP, c)})", "up"), q(f"count({selector(m.UP, c)})", "scraped")),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            f"{title}: nodes up",
            (q(f"sum({nodes_up})", "up"), q(f"count({nodes_up})", "known")),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            f"{title}: CPU",
            (q(f"avg({selector(m.REC_NODE_CPU_UTILISATION, c)})", "cpu"),),
            unit="percentunit",
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            f"{title}: memory",
            (q(f"avg({selector(m.REC_NODE_MEMORY_UTILISATION, c)})", "memory"),),
            unit="percentunit",
            kind="stat",
            width=6,
            height=4,
        ),
        gpu,
        Panel(
            f"{title}: firing alerts",
            (q(f"count({selector('ALERTS', c, eq('alertstate', 'firing'))}) or vector(0)", "alerts"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=(1,),
        ),
    ]


def _stat(title: str, expr: str) -> Panel:
    return Panel(title, (q(expr, "gpu"),), unit="percentunit", kind="stat", width=6, height=4)


def cluster_overview(config: ClusterConfig) -> dict[str, Any]:
    """HPC and cloud side by side: the HPC column on the left, the cloud column on the right."""
    hpc = hpc_cluster_label(config)
    hpc_gpu = f"sum({selector(m.REC_SLURM_GPUS_ALLOC_RATIO, eq(m.CLUSTER_LABEL, hpc))})"
    columns = [_cluster_column(hpc, f"HPC ({hpc})", _stat(f"HPC ({hpc}): SLURM GPUs allocated", hpc_gpu))]
    cloud = cloud_cluster_label(config)
    if cloud is not None:
        cloud_gpu = f"avg({selector(m.DCGM_GPU_UTIL, eq(m.CLUSTER_LABEL, cloud))}) / 100"
        gpu_panel = _stat(f"Cloud ({cloud}): GPU utilisation", cloud_gpu)
        columns.append(_cluster_column(cloud, f"Cloud ({cloud})", gpu_panel))
    # Two panels of each column per grid row (6 + 6 wide), the columns beside each other.
    panels: list[Panel] = []
    for start in range(0, len(columns[0]), 2):
        for column in columns:
            panels += column[start : start + 2]
    summary = [
        Panel(
            "Targets down, by cluster and job",
            (q(f"sum by (cluster, job) ({_sel(m.UP)} == 0)", "{{cluster}} {{job}}"),),
        ),
        Panel(
            "Requests per second, by cluster",
            (q(f"sum by (cluster) ({_sel(m.REC_REQUEST_RATE)})", "{{cluster}}"),),
            unit="reqps",
        ),
    ]
    return dashboard("ai-how-cluster-overview", "ai-how / Cluster overview", panels + summary)


def resource_utilisation() -> dict[str, Any]:
    panels = [
        Panel(
            "CPU utilisation by node",
            (q(_sel(m.REC_NODE_CPU_UTILISATION), "{{cluster}} {{instance}}"),),
            unit="percentunit",
        ),
        Panel(
            "Memory utilisation by node",
            (q(_sel(m.REC_NODE_MEMORY_UTILISATION), "{{cluster}} {{instance}}"),),
            unit="percentunit",
        ),
        Panel(
            "Filesystem used (/)",
            (
                q(
                    f"1 - {_sel(m.NODE_FILESYSTEM_AVAILABLE, eq('mountpoint', '/'))} / "
                    f"{_sel(m.NODE_FILESYSTEM_SIZE, eq('mountpoint', '/'))}",
                    "{{cluster}} {{instance}}",
                ),
            ),
            unit="percentunit",
            thresholds=(0.9,),
        ),
        Panel("Load (1m)", (q(_sel(m.NODE_LOAD1), "{{cluster}} {{instance}}"),)),
        Panel(
            "GPU utilisation (DCGM)",
            (q(_sel(m.DCGM_GPU_UTIL), "{{cluster}} {{Hostname}} gpu{{gpu}}"),),
            unit="percent",
        ),
        Panel(
            "GPU memory used (DCGM)",
            (
                q(
                    f"{_sel(m.DCGM_FB_USED)} / ({_sel(m.DCGM_FB_USED)} + {_sel(m.DCGM_FB_FREE)})",
                    "{{cluster}} {{Hostname}} gpu{{gpu}}",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "SLURM CPUs allocated",
            (q(_sel(m.REC_SLURM_CPUS_ALLOC_RATIO), "{{cluster}}"),),
            unit="percentunit",
        ),
        Panel(
            "SLURM GPUs allocated",
            (q(_sel(m.REC_SLURM_GPUS_ALLOC_RATIO), "{{cluster}}"),),
            unit="percentunit",
        ),
    ]
    return dashboard("ai-how-resources", "ai-how / Resource utilisation", panels)


def workload_status() -> dict[str, Any]:
    node_states = tuple(
        q(f"sum by (cluster) ({_sel(m.SLURM_NODES[state])})", f"{{{{cluster}}}} {state}")
        for state in ("alloc", "mix", "idle", "drain", "down")
    )
    panels = [
        Panel("SLURM nodes by state", node_states),
        Panel(
            "SLURM queue",
            (
                q(f"sum by (cluster) ({_sel(m.SLURM_QUEUE_PENDING)})", "{{cluster}} pending"),
                q(f"sum by (cluster) ({_sel(m.SLURM_QUEUE_RUNNING)})", "{{cluster}} running"),
            ),
        ),
        Panel(
            "Pending jobs by partition",
            (
                q(
                    f"sum by (cluster, partition) ({_sel(m.SLURM_PARTITION_JOBS_PENDING)})",
                    "{{cluster}} {{partition}}",
                ),
            ),
        ),
        Panel(
            "Running jobs by partition",
            (
                q(
                    f"sum by (cluster, partition) ({_sel(m.SLURM_PARTITION_JOBS_RUNNING)})",
                    "{{cluster}} {{partition}}",
                ),
            ),
        ),
        Panel(
            "Model servers up",
            (q(f"sum by (cluster) ({_sel(m.UP, eq('job', m.JOB_MODEL_SERVERS))})", "{{cluster}}"),),
            kind="stat",
            width=8,
        ),
        Panel(
            "Requests in flight",
            (q(f"sum by (cluster) ({_sel(m.REQUESTS_IN_FLIGHT)})", "{{cluster}}"),),
            kind="stat",
            width=8,
        ),
        Panel(
            "Pipeline runs by status",
            (q(f"sum by (status) ({_sel(m.PIPELINE_RUNS)})", "{{status}}"),),
            kind="stat",
            width=8,
        ),
        Panel(
            "Inference requests running / waiting",
            (
                q(
                    f"sum by (cluster, model_name) ({_sel(m.REQUESTS_RUNNING)})",
                    "{{cluster}} {{model_name}} running",
                ),
                q(
                    f"sum by (cluster, model_name) ({_sel(m.REQUESTS_WAITING)})",
                    "{{cluster}} {{model_name}} waiting",
                ),
            ),
            width=24,
        ),
    ]
    return dashboard("ai-how-workloads", "ai-how / Workload status", panels)


def model_pipeline() -> dict[str, Any]:
    panels = [
        Panel("Runs by status", (q(f"sum by (status) ({_sel(m.PIPELINE_RUNS)})", "{{status}}"),)),
        Panel(
            "Stages by status",
            (q(f"sum by (stage, status) ({_sel(m.PIPELINE_STAGES)})", "{{stage}} {{status}}"),),
        ),
        Panel(
            "Stage duration p95 (train, transfer, deploy...)",
            (q(_quantile(0.95, m.PIPELINE_STAGE_DURATION, "stage"), "{{stage}}"),),
            unit="s",
        ),
        Panel(
            "Stage failures",
            (q(f"sum by (stage) (increase({_sel(m.PIPELINE_STAGE_FAILURES_TOTAL)}[{RATE}]))", "{{stage}}"),),
            thresholds=(1,),
        ),
        Panel(
            "Time since the last successful run",
            (q(f"time() - {_sel(m.PIPELINE_LAST_SUCCESS)}", "{{model}}"),),
            unit="s",
        ),
        Panel("Production version", (q(_sel(m.MODEL_PRODUCTION_VERSION), "{{model}}"),), kind="stat"),
        Panel(
            "Sync throughput",
            (q(f"sum by (model) (rate({_sel(m.SYNC_BYTES_TOTAL)}[{RATE}]))", "{{model}}"),),
            unit="Bps",
        ),
        Panel(
            "Files synced / sync failures",
            (
                q(f"sum by (model) (increase({_sel(m.SYNC_FILES_TOTAL)}[{RATE}]))", "{{model}} files"),
                q(f"sum by (model) (increase({_sel(m.SYNC_FAILURES_TOTAL)}[{RATE}]))", "{{model}} failures"),
            ),
        ),
        Panel("Training loss", (q(_sel(m.TRAINING_LOSS), "{{model}} {{run}}"),), width=8),
        Panel(
            "Training samples per second",
            (q(_sel(m.TRAINING_SAMPLES_PER_SECOND), "{{model}} {{run}}"),),
            width=8,
        ),
        Panel("Training step", (q(_sel(m.TRAINING_STEP), "{{model}} {{run}}"),), width=8),
    ]
    return dashboard("ai-how-pipeline", "ai-how / Model pipeline", panels)


def inference(config: ClusterConfig) -> dict[str, Any]:
    slo = config.monitoring.slo
    latency = tuple(
        q(_quantile(quantile, m.REQUEST_LATENCY, "cluster, model_name"), f"{{{{model_name}}}} p{label}")
        for quantile, label in ((0.5, "50"), (0.95, "95"), (0.99, "99"))
    )
    requests = _sel(m.REQUESTS_TOTAL)
    panels = [
        Panel(
            "Latency percentiles",
            latency,
            unit="s",
            thresholds=(slo.inference_p95_seconds,),
            description=f"SLO: p95 below {slo.inference_p95_seconds:g}s",
        ),
        Panel(
            "Requests per second by code",
            (q(f"sum by (cluster, model, code) (rate({requests}[{RATE}]))", "{{model}} {{code}}"),),
            unit="reqps",
        ),
        Panel(
            "Tokens per second",
            (
                q(
                    f"sum by (cluster, model_name) (rate({_sel(m.GENERATION_TOKENS_TOTAL)}[{RATE}]))",
                    "{{model_name}} generated",
                ),
                q(
                    f"sum by (cluster, model_name) (rate({_sel(m.PROMPT_TOKENS_TOTAL)}[{RATE}]))",
                    "{{model_name}} prompt",
                ),
            ),
        ),
        Panel(
            "Error ratio (5xx)",
            (
                q(
                    # `or ... * 0`: 0 while nothing failed, instead of no data
                    f"(sum by (cluster, model) (rate({_sel(m.REQUESTS_TOTAL, regex('code', '5..'))}[{RATE}])) "
                    f"or sum by (cluster, model) (rate({requests}[{RATE}])) * 0) / "
                    f"sum by (cluster, model) (rate({requests}[{RATE}]))",
                    "{{model}}",
                ),
            ),
            unit="percentunit",
            thresholds=(slo.error_rate,),
        ),
        Panel(
            "Queue: waiting and running requests",
            (
                q(f"sum by (cluster, model_name) ({_sel(m.REQUESTS_WAITING)})", "{{model_name}} waiting"),
                q(f"sum by (cluster, model_name) ({_sel(m.REQUESTS_RUNNING)})", "{{model_name}} running"),
                q(f"sum by (cluster) ({_sel(m.REQUESTS_IN_FLIGHT)})", "{{cluster}} in flight"),
            ),
        ),
        Panel(
            "Time to first token / per output token (p95)",
            (
                q(
                    _quantile(0.95, m.TIME_TO_FIRST_TOKEN, "cluster, model_name"),
                    "{{model_name}} first token",
                ),
                q(
                    _quantile(0.95, m.TIME_PER_OUTPUT_TOKEN, "cluster, model_name"),
                    "{{model_name}} per token",
                ),
            ),
            unit="s",
        ),
        Panel("KV cache usage", (q(_sel(m.KV_CACHE_USAGE), "{{model_name}}"),), unit="percentunit"),
        Panel(
            "Batch size (p50 / p95)",
            (
                q(_quantile(0.5, m.BATCH_SIZE, "cluster, model"), "{{model}} p50"),
                q(_quantile(0.95, m.BATCH_SIZE, "cluster, model"), "{{model}} p95"),
            ),
        ),
        Panel(
            "LLM engine: mean decode batch",
            (
                q(
                    f"sum by (cluster, model_name) (rate({_sel(m.ENGINE_STEP_ROWS_TOTAL)}[{RATE}])) / "
                    f"sum by (cluster, model_name) (rate({_sel(m.ENGINE_STEPS_TOTAL)}[{RATE}]))",
                    "{{model_name}} rows per step",
                ),
            ),
        ),
        Panel(
            "LLM engine: device busy and loop waiting",
            (
                q(
                    # a fraction per engine: averaged over the replicas, never summed past 100%
                    f"avg by (cluster, model_name, phase) (rate({_sel(m.ENGINE_DEVICE_SECONDS_TOTAL)}[{RATE}]))",
                    "{{model_name}} {{phase}}",
                ),
                q(
                    f"avg by (cluster, model_name) (rate({_sel(m.ENGINE_WAIT_SECONDS_TOTAL)}[{RATE}]))",
                    "{{model_name}} loop waiting",
                ),
            ),
            unit="percentunit",
        ),
    ]
    return dashboard("ai-how-inference", "ai-how / Inference", panels)


def gpu(config: ClusterConfig) -> dict[str, Any]:
    legend = "{{cluster}} {{Hostname}} gpu{{gpu}}"
    panels = [
        Panel("GPU utilisation", (q(_sel(m.DCGM_GPU_UTIL), legend),), unit="percent"),
        Panel("Framebuffer memory used", (q(f"{_sel(m.DCGM_FB_USED)} * 1024 * 1024", legend),), unit="bytes"),
        Panel("Framebuffer memory free", (q(f"{_sel(m.DCGM_FB_FREE)} * 1024 * 1024", legend),), unit="bytes"),
        Panel("Power draw", (q(_sel(m.DCGM_POWER_USAGE), legend),), unit="watt"),
        Panel(
            "Temperature",
            (q(_sel(m.DCGM_GPU_TEMP), legend),),
            unit="celsius",
            thresholds=(float(config.monitoring.slo.gpu_temperature_celsius),),
        ),
        Panel("Last XID error", (q(_sel(m.DCGM_XID_ERRORS), legend),), thresholds=(1,)),
    ]
    return dashboard("ai-how-gpu", "ai-how / GPU (DCGM)", panels)


def mlflow() -> dict[str, Any]:
    requests = _sel(m.MLFLOW_REQUESTS_TOTAL)
    panels = [
        Panel(
            "MLflow up",
            (q(_sel(m.UP, eq("job", m.JOB_MLFLOW)), "{{cluster}} {{instance}}"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "Requests per second",
            (q(f"sum by (cluster) (rate({requests}[{RATE}]))", "{{cluster}}"),),
            unit="reqps",
            kind="stat",
            width=6,
        ),
        Panel(
            "Error ratio (5xx)",
            (
                q(
                    f"(sum by (cluster) (rate({_sel(m.MLFLOW_REQUESTS_TOTAL, regex('status', '5..'))}[{RATE}])) "
                    f"or sum by (cluster) (rate({requests}[{RATE}])) * 0) / "
                    f"sum by (cluster) (rate({requests}[{RATE}]))",
                    "{{cluster}}",
                ),
            ),
            unit="percentunit",
            kind="stat",
            width=12,
        ),
        Panel(
            "Requests per second by status",
            (q(f"sum by (cluster, status) (rate({requests}[{RATE}]))", "{{cluster}} {{status}}"),),
            unit="reqps",
        ),
        Panel(
            "Request latency (p50 / p95)",
            (
                q(_quantile(0.5, m.MLFLOW_REQUEST_DURATION, "cluster"), "{{cluster}} p50"),
                q(_quantile(0.95, m.MLFLOW_REQUEST_DURATION, "cluster"), "{{cluster}} p95"),
            ),
            unit="s",
        ),
    ]
    return dashboard("ai-how-mlflow", "ai-how / MLflow", panels)


def dashboards(config: ClusterConfig) -> dict[str, dict[str, Any]]:
    """File stem -> dashboard JSON, in a fixed order."""
    return {
        "cluster-overview": cluster_overview(config),
        "resource-utilisation": resource_utilisation(),
        "workload-status": workload_status(),
        "model-pipeline": model_pipeline(),
        "inference": inference(config),
        "gpu": gpu(config),
        "mlflow": mlflow(),
    }


# --------------------------------------------------------------------------- queries, provisioning

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with ``$name`` / ``${name}`` replaced from ``variables`` (unknown names stay)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return _VARIABLE.sub(value, expr)


def panel_queries(
    boards: Mapping[str, Mapping[str, Any]], variables: Mapping[str, str] | None = None
) -> list[PanelQuery]:
    """Every panel's expressions, template variables substituted (defaults: every cluster, 5m windows)."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    return [
        PanelQuery(
            str(board["uid"]),
            int(panel["id"]),
            str(panel["title"]),
            str(target["refId"]),
            substitute(str(target["expr"]), values),
        )
        for board in boards.values()
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def dashboards_provisioning(dashboards_dir: str) -> dict[str, Any]:
    """Grafana's file provider for the rendered dashboards folder."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": TAG,
                "orgId": 1,
                "folder": TAG,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": dashboards_dir, "foldersFromFilesStructure": False},
            }
        ],
    }


def datasources_provisioning(config: ClusterConfig) -> dict[str, Any]:
    """The HPC-side Prometheus as Grafana's default data source (dashboards pick it through $datasource)."""
    prom = config.monitoring.prometheus
    host = "127.0.0.1" if prom.host in ("0.0.0.0", "::", "") else prom.host
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": f"Prometheus ({hpc_cluster_label(config)})",
                "uid": "ai-how-prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": f"http://{host}:{prom.port}",
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": prom.scrape_interval, "httpMethod": "POST"},
            }
        ],
    }
