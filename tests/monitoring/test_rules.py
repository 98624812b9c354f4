"""Generated recording and alert rules: promtool accepts them, and `promtool test rules` proves every alert
fires on the series it is meant for (with its labels and annotations) and stays silent otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.models import ClusterConfig, Monitoring
from ai_how.monitoring import metrics_catalog as m
from ai_how.monitoring.kube_prometheus import prometheus_rules
from ai_how.monitoring.render import dump_yaml
from ai_how.monitoring.rules import Alert, RuleGroup, alert_names, alerts, rule_groups, rules_file
from tests.monitoring.tools import assert_ok, example_config, promtool

HPC = "training-cluster"  # the example's HPC cluster: the cluster label of the HPC side's series
CLOUD = "inference-cluster"


# --------------------------------------------------------------------------- one case per alert


@dataclass(frozen=True)
class Firing:
    series: dict[str, str]  # series selector -> promtool values
    eval_time: str
    labels: dict[str, str]  # the alert's labels (severity included)
    annotations: dict[str, str]


@dataclass(frozen=True)
class Silent:
    series: dict[str, str]
    eval_time: str


@dataclass(frozen=True)
class AlertCases:
    firing: list[Firing]
    silent: list[Silent] = field(default_factory=list)


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def cases(cluster: str) -> dict[str, AlertCases]:
    """Every alert's cases, for series of ``cluster`` (thresholds: the example config's defaults)."""
    c = cluster
    node = {"job": "node", "instance": "n1:9100", "cluster": c}
    gpu = {"gpu": "0", "Hostname": "gpu-worker-1", "cluster": c}
    slurm = {"job": "slurm", "instance": "127.0.0.1:9341", "cluster": c}
    server = {"job": "model-servers", "instance": "127.0.0.1:8080", "model": "digits", "cluster": c}
    pipeline = {"job": "pipeline", "instance": "127.0.0.1:9342", "cluster": c}
    mlflow = {"job": "mlflow", "instance": "127.0.0.1:5000", "cluster": c}

    def latency(slow: bool) -> dict[str, str]:
        base = {"job": "model-servers", "instance": "127.0.0.1:8080", "model_name": "digits", "cluster": c}
        fast_buckets = {"0.1": "0+10x30", "0.5": "0+10x30", "1": "0+10x30", "+Inf": "0+10x30"}
        slow_buckets = {"0.1": "0x30", "0.5": "0x30", "1": "0+10x30", "+Inf": "0+10x30"}
        buckets = slow_buckets if slow else fast_buckets
        return {f"request_predict_seconds_bucket{{{_labels(**base, le=le)}}}": v for le, v in buckets.items()}

    def requests(ok: str, failed: str) -> dict[str, str]:
        base = {**server, "route": "/v1/models/digits:predict", "method": "POST"}
        return {
            f"ai_how_requests_total{{{_labels(**base, code='200')}}}": ok,
            f"ai_how_requests_total{{{_labels(**base, code='500')}}}": failed,
        }

    return {
        "NodeDown": AlertCases(
            firing=[
                Firing(
                    {f"up{{{_labels(**node)}}}": "0x10"},
                    "5m",
                    {**node, "severity": "critical"},
                    {
                        "summary": "Node n1:9100 is down",
                        "description": f"The node exporter on n1:9100 (cluster {c}) does not answer scrapes: "
                        "the machine is down or unreachable.",
                    },
                ),
                # kube-prometheus-stack's node exporter job on the cloud side
                Firing(
                    {f"up{{{_labels(**{**node, 'job': 'node-exporter'})}}}": "0x10"},
                    "5m",
                    {**node, "job": "node-exporter", "severity": "critical"},
                    {
                        "summary": "Node n1:9100 is down",
                        "description": f"The node exporter on n1:9100 (cluster {c}) does not answer scrapes: "
                        "the machine is down or unreachable.",
                    },
                ),
            ],
            silent=[
                Silent({f"up{{{_labels(**node)}}}": "1x10"}, "5m"),
                Silent({f"up{{{_labels(**node)}}}": "1 1 1 1 0 0"}, "5m"),  # down 1m < for: 2m
                Silent({f"up{{{_labels(**{**node, 'job': 'slurm'})}}}": "0x10"}, "5m"),  # not a node job
            ],
        ),
        "GpuTemperatureHigh": AlertCases(
            firing=[
                Firing(
                    {f"DCGM_FI_DEV_GPU_TEMP{{{_labels(**gpu)}}}": "90x10"},
                    "10m",
                    {**gpu, "severity": "warning"},
                    {
                        "summary": "GPU 0 on gpu-worker-1 is at 90 degrees C",
                        "description": "Above the limit of 85 degrees C (monitoring.slo.gpu_temperature_celsius):"
                        " check cooling and the load on the node.",
                    },
                )
            ],
            silent=[
                Silent({f"DCGM_FI_DEV_GPU_TEMP{{{_labels(**gpu)}}}": "85x10"}, "10m"),  # at, not above
                Silent({f"DCGM_FI_DEV_GPU_TEMP{{{_labels(**gpu)}}}": "60x7 90x3"}, "10m"),  # hot 3m < 5m
            ],
        ),
        "GpuXidError": AlertCases(
            firing=[
                Firing(
                    {f"DCGM_FI_DEV_XID_ERRORS{{{_labels(**gpu)}}}": "0 0 79 79"},
                    "3m",
                    {**gpu, "severity": "critical"},
                    {
                        "summary": "GPU 0 on gpu-worker-1 reported XID error 79",
                        "description": "The NVIDIA driver reported XID 79 (see NVIDIA's XID catalogue); the GPU "
                        "may need a reset and the node a drain.",
                    },
                )
            ],
            silent=[Silent({f"DCGM_FI_DEV_XID_ERRORS{{{_labels(**gpu)}}}": "0x5"}, "3m")],
        ),
        "SlurmNodesDown": AlertCases(
            firing=[
                Firing(
                    {f"slurm_nodes_down{{{_labels(**slurm)}}}": "2x10"},
                    "10m",
                    {**slurm, "severity": "critical"},
                    {
                        "summary": f"2 SLURM nodes are down in cluster {c}",
                        "description": "sinfo reports nodes in state DOWN; `sinfo -R` says why, "
                        "`scontrol update nodename=... state=resume` brings one back.",
                    },
                )
            ],
            silent=[Silent({f"slurm_nodes_down{{{_labels(**slurm)}}}": "0x10"}, "10m")],
        ),
        "SlurmNodesDrained": AlertCases(
            firing=[
                Firing(
                    {f"slurm_nodes_drain{{{_labels(**slurm)}}}": "1x20"},
                    "20m",
                    {**slurm, "severity": "warning"},
                    {
                        "summary": f"1 SLURM nodes are drained in cluster {c}",
                        "description": "Drained nodes take no new jobs; `sinfo -R` says who drained them and why.",
                    },
                )
            ],
            silent=[
                Silent({f"slurm_nodes_drain{{{_labels(**slurm)}}}": "0x20"}, "20m"),
                Silent({f"slurm_nodes_drain{{{_labels(**slurm)}}}": "1x10"}, "10m"),  # 10m < for: 15m
            ],
        ),
        "SlurmJobsPendingTooLong": AlertCases(
            firing=[
                Firing(
                    {f"slurm_queue_pending{{{_labels(**slurm)}}}": "3x40"},
                    "35m",
                    {**slurm, "severity": "warning"},
                    {
                        "summary": f"3 SLURM jobs are pending in cluster {c}",
                        "description": "Jobs have been waiting for more than 30 minutes "
                        "(monitoring.slo.job_pending_minutes); `squeue --start` shows their reasons.",
                    },
                )
            ],
            silent=[Silent({f"slurm_queue_pending{{{_labels(**slurm)}}}": "3x40"}, "20m")],
        ),
        "SlurmExporterDown": AlertCases(
            firing=[
                Firing(
                    {f"up{{{_labels(**slurm)}}}": "0x10"},
                    "10m",
                    {**slurm, "severity": "warning"},
                    {
                        "summary": "The SLURM exporter 127.0.0.1:9341 cannot report",
                        "description": "The exporter is down or its last sinfo/squeue call failed: the SLURM "
                        "alerts are blind until it reports again.",
                    },
                ),
                Firing(
                    {
                        f"up{{{_labels(**slurm)}}}": "1x10",
                        f"slurm_exporter_scrape_error{{{_labels(**slurm)}}}": "1x10",
                    },
                    "10m",
                    {**slurm, "severity": "warning"},
                    {
                        "summary": "The SLURM exporter 127.0.0.1:9341 cannot report",
                        "description": "The exporter is down or its last sinfo/squeue call failed: the SLURM "
                        "alerts are blind until it reports again.",
                    },
                ),
            ],
            silent=[
                Silent(
                    {
                        f"up{{{_labels(**slurm)}}}": "1x10",
                        f"slurm_exporter_scrape_error{{{_labels(**slurm)}}}": "0x10",
                    },
                    "10m",
                )
            ],
        ),
        "InferenceLatencyHigh": AlertCases(
            firing=[
                Firing(
                    latency(slow=True),
                    "20m",
                    {"job": "model-servers", "model_name": "digits", "cluster": c, "severity": "warning"},
                    {
                        "summary": "P95 latency of digits is 975ms",
                        "description": "Above the SLO of 0.5s (monitoring.slo.inference_p95_seconds).",
                    },
                )
            ],
            silent=[Silent(latency(slow=False), "20m")],
        ),
        "InferenceErrorRateHigh": AlertCases(
            firing=[
                Firing(
                    requests(ok="0+90x20", failed="0+10x20"),
                    "15m",
                    {"job": "model-servers", "model": "digits", "cluster": c, "severity": "critical"},
                    {
                        "summary": "10% of requests to digits fail",
                        "description": "5xx answers are above the SLO of 5.00% (monitoring.slo.error_rate).",
                    },
                )
            ],
            silent=[
                Silent(requests(ok="0+99x20", failed="0+1x20"), "15m"),
                Silent(requests(ok="0x20", failed="0x20"), "15m"),  # no traffic is not an error rate
            ],
        ),
        "ModelServerDown": AlertCases(
            firing=[
                Firing(
                    {f"up{{{_labels(**server)}}}": "0x10"},
                    "5m",
                    {**server, "severity": "critical"},
                    {
                        "summary": "Model server digits (127.0.0.1:8080) is down",
                        "description": "Its /metrics endpoint does not answer: the server crashed or its pod is "
                        "not running.",
                    },
                )
            ],
            silent=[Silent({f"up{{{_labels(**server)}}}": "1x10"}, "5m")],
        ),
        "ModelSyncFailed": AlertCases(
            firing=[
                Firing(
                    {f"ai_how_sync_failures_total{{{_labels(**pipeline, model='digits')}}}": "0 0 1 1 1"},
                    "4m",
                    {**pipeline, "model": "digits", "severity": "warning"},
                    {
                        "summary": "Syncing model digits to the object store failed",
                        "description": "`ai-how sync` failed in the last 15 minutes; the run's log says why, "
                        "and a re-run resumes.",
                    },
                ),
                # the exporter's first export of the counter, already at 1
                Firing(
                    {f"ai_how_sync_failures_total{{{_labels(**pipeline, model='digits')}}}": "_x5 1x5"},
                    "8m",
                    {**pipeline, "model": "digits", "severity": "warning"},
                    {
                        "summary": "Syncing model digits to the object store failed",
                        "description": "`ai-how sync` failed in the last 15 minutes; the run's log says why, "
                        "and a re-run resumes.",
                    },
                ),
            ],
            silent=[
                Silent(
                    {f"ai_how_sync_failures_total{{{_labels(**pipeline, model='digits')}}}": "1x40"}, "30m"
                ),
            ],
        ),
        "PipelineStageFailed": AlertCases(
            firing=[
                Firing(
                    {
                        f"ai_how_pipeline_stage_failures_total{{{_labels(**pipeline, stage='train')}}}": "0 0 1 1"
                    },
                    "3m",
                    {**pipeline, "stage": "train", "severity": "warning"},
                    {
                        "summary": "Pipeline stage train failed",
                        "description": "A pipeline run failed in stage train in the last 15 minutes; "
                        "`ai-how pipeline status` shows the run, `ai-how pipeline resume` retries from that stage.",
                    },
                )
            ],
            silent=[
                Silent(
                    {f"ai_how_pipeline_stage_failures_total{{{_labels(**pipeline, stage='train')}}}": "0x10"},
                    "5m",
                ),
                # an old failure: the counter has not moved for more than the window
                Silent(
                    {f"ai_how_pipeline_stage_failures_total{{{_labels(**pipeline, stage='train')}}}": "2x40"},
                    "30m",
                ),
            ],
        ),
        "PipelineExporterDown": AlertCases(
            firing=[
                Firing(
                    {f"up{{{_labels(**pipeline)}}}": "0x10"},
                    "10m",
                    {**pipeline, "severity": "warning"},
                    {
                        "summary": "The pipeline exporter 127.0.0.1:9342 is down",
                        "description": "Pipeline, sync and training metrics are missing, and the pipeline alerts "
                        "are blind.",
                    },
                )
            ],
            silent=[Silent({f"up{{{_labels(**pipeline)}}}": "1x10"}, "10m")],
        ),
        "MLflowDown": AlertCases(
            firing=[
                Firing(
                    {f"up{{{_labels(**mlflow)}}}": "0x10"},
                    "5m",
                    {**mlflow, "severity": "critical"},
                    {
                        "summary": "MLflow 127.0.0.1:5000 is down",
                        "description": "The tracking server does not answer: runs cannot log and the registry "
                        "cannot be read.",
                    },
                )
            ],
            silent=[Silent({f"up{{{_labels(**mlflow)}}}": "1x10"}, "5m")],
        ),
    }


# --------------------------------------------------------------------------- promtool test files


def _series(series: dict[str, str]) -> list[dict[str, str]]:
    return [{"series": selector, "values": values} for selector, values in series.items()]


def promtool_tests(all_cases: dict[str, AlertCases]) -> list[dict[str, Any]]:
    """One promtool test group per case (so cases never see each other's series)."""
    tests: list[dict[str, Any]] = []
    for name, alert_cases in sorted(all_cases.items()):
        for firing in alert_cases.firing:
            expected = {"exp_labels": firing.labels, "exp_annotations": firing.annotations}
            tests.append(
                {
                    "name": f"{name} fires",
                    "interval": "1m",
                    "input_series": _series(firing.series),
                    "alert_rule_test": [
                        {"eval_time": firing.eval_time, "alertname": name, "exp_alerts": [expected]}
                    ],
                }
            )
        for silent in alert_cases.silent:
            tests.append(
                {
                    "name": f"{name} stays silent",
                    "interval": "1m",
                    "input_series": _series(silent.series),
                    "alert_rule_test": [{"eval_time": silent.eval_time, "alertname": name, "exp_alerts": []}],
                }
            )
    return tests


def write_rule_files(groups: list[RuleGroup], folder: Path) -> list[Path]:
    paths = []
    for group in groups:
        path = folder / group.file_name
        path.write_text(dump_yaml(rules_file(group)))
        paths.append(path)
    return paths


def run_promtool_tests(rule_files: list[Path], tests: list[dict[str, Any]], folder: Path) -> None:
    test_file = folder / "rules_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(p) for p in rule_files], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    assert_ok(promtool("test", "rules", test_file))


@pytest.fixture(scope="module")
def config() -> ClusterConfig:
    return example_config()


@pytest.fixture(scope="module")
def monitoring(config: ClusterConfig) -> Monitoring:
    return config.monitoring


# --------------------------------------------------------------------------- tests


def test_every_alert_has_a_firing_and_a_silent_promtool_case(monitoring: Monitoring) -> None:
    """A new alert without cases fails here, so no alert goes untested."""
    names = alert_names(rule_groups(monitoring))
    assert len(names) == len(set(names)), "alert names must be unique"
    written = cases(HPC)
    assert sorted(written) == sorted(names)
    for name, alert_cases in written.items():
        assert alert_cases.firing and alert_cases.silent, name


def test_the_issue_s_alerts_are_all_there(monitoring: Monitoring) -> None:
    names = set(alert_names(rule_groups(monitoring)))
    wanted = {
        "NodeDown", "GpuTemperatureHigh", "GpuXidError", "SlurmNodesDown", "SlurmNodesDrained",
        "SlurmJobsPendingTooLong", "InferenceLatencyHigh", "InferenceErrorRateHigh", "ModelServerDown",
        "ModelSyncFailed", "PipelineStageFailed", "MLflowDown",
    }  # fmt: skip
    assert wanted <= names


def test_promtool_accepts_every_rule_file(monitoring: Monitoring, tmp_path: Path) -> None:
    paths = write_rule_files(rule_groups(monitoring), tmp_path)
    result = promtool("check", "rules", *paths)
    assert_ok(result)
    assert "SUCCESS: 8 rules found" in result.stdout  # the recording group


def test_every_alert_fires_when_it_should_and_stays_silent_otherwise(
    monitoring: Monitoring, tmp_path: Path
) -> None:
    paths = write_rule_files(rule_groups(monitoring), tmp_path)
    run_promtool_tests(paths, promtool_tests(cases(HPC)), tmp_path)


def test_the_cloud_prometheusrules_pass_the_same_cases_for_cloud_series(
    config: ClusterConfig, tmp_path: Path
) -> None:
    groups = [obj["spec"] for obj in prometheus_rules(config)]
    paths = []
    for index, spec in enumerate(groups):
        path = tmp_path / f"cloud-{index}.yml"
        path.write_text(dump_yaml(spec))
        paths.append(path)
    run_promtool_tests(paths, promtool_tests(cases(CLOUD)), tmp_path)


def test_the_cloud_rules_ignore_the_federated_hpc_series(config: ClusterConfig, tmp_path: Path) -> None:
    """The HPC side alerts on its own series; the cloud copy must not alert on them a second time."""
    paths = []
    for index, obj in enumerate(prometheus_rules(config)):
        path = tmp_path / f"cloud-{index}.yml"
        path.write_text(dump_yaml(obj["spec"]))
        paths.append(path)
    silent = {
        name: AlertCases(
            firing=[], silent=[Silent(firing.series, firing.eval_time) for firing in alert_cases.firing]
        )
        for name, alert_cases in cases(HPC).items()
    }
    run_promtool_tests(paths, promtool_tests(silent), tmp_path)


def test_a_wrong_expectation_fails_promtool(monitoring: Monitoring, tmp_path: Path) -> None:
    """The harness can fail: a silent case that expects an alert is reported."""
    paths = write_rule_files(rule_groups(monitoring), tmp_path)
    case = cases(HPC)["NodeDown"]
    wrong = {
        "NodeDown": AlertCases(
            firing=[Firing(case.silent[1].series, "5m", case.firing[0].labels, case.firing[0].annotations)]
        )
    }
    test_file = tmp_path / "wrong_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(p) for p in paths],
                "evaluation_interval": "1m",
                "tests": promtool_tests(wrong),
            }
        )
    )
    result = promtool("test", "rules", test_file)
    assert result.returncode != 0
    assert "NodeDown" in result.stdout + result.stderr


def test_thresholds_come_from_the_slo(config: ClusterConfig) -> None:
    slo = config.monitoring.slo.model_copy(
        update={
            "inference_p95_seconds": 1.25,
            "error_rate": 0.02,
            "gpu_temperature_celsius": 80,
            "job_pending_minutes": 45,
        }
    )
    mon = config.monitoring.model_copy(update={"slo": slo})
    by_name = {a.name: a for a in alerts(rule_groups(mon))}
    assert by_name["InferenceLatencyHigh"].expr.endswith("> 1.25")
    assert by_name["InferenceErrorRateHigh"].expr.endswith("> 0.02")
    assert by_name["GpuTemperatureHigh"].expr.endswith("> 80")
    assert by_name["SlurmJobsPendingTooLong"].for_ == "45m"


def test_every_alert_has_severity_summary_description_and_for(monitoring: Monitoring) -> None:
    for group in rule_groups(monitoring):
        for rule in group.to_dict()["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    # every alert that is not an event (an XID, a failure counter moving) waits before firing
    waiting = {a.name for a in alerts(rule_groups(monitoring)) if a.for_ != "0s"}
    assert waiting == set(alert_names(rule_groups(monitoring))) - {
        "GpuXidError",
        "ModelSyncFailed",
        "PipelineStageFailed",
    }


def test_for_override_shortens_every_wait_and_keeps_events_immediate(monitoring: Monitoring) -> None:
    overridden = alerts(rule_groups(monitoring, for_override="10s"))
    original = {a.name: a for a in alerts(rule_groups(monitoring))}
    for alert in overridden:
        assert alert.for_ == ("0s" if original[alert.name].for_ == "0s" else "10s"), alert.name
        assert isinstance(alert, Alert)
    rule = next(
        r
        for g in rule_groups(monitoring, for_override="10s")
        for r in g.to_dict()["rules"]
        if r.get("alert") == "GpuXidError"
    )
    assert "for" not in rule


def test_recording_rules_the_federation_and_dashboards_rely_on(monitoring: Monitoring) -> None:
    records = {
        r["record"]: r["expr"] for g in rule_groups(monitoring) for r in g.to_dict()["rules"] if "record" in r
    }
    assert m.REC_REQUEST_LATENCY_P95 == "job:ai_how_request_latency_seconds:p95"
    assert m.REC_SLURM_GPUS_ALLOC_RATIO == "job:slurm_gpus_alloc:ratio"
    assert "histogram_quantile(0.95" in records[m.REC_REQUEST_LATENCY_P95]
    assert set(records) >= {
        m.REC_REQUEST_LATENCY_P95,
        m.REC_SLURM_GPUS_ALLOC_RATIO,
        m.REC_REQUEST_ERROR_RATIO,
    }
