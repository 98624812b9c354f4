"""Recording and alert rules from the config's service levels, as Prometheus rule groups.

The same groups become ``prometheus/rules/*.yml`` for the HPC-side (embedded) Prometheus and
PrometheusRule objects for kube-prometheus-stack (scoped to the cloud cluster's own series, see
:class:`~ai_how.monitoring.promql.Scope`). Every alert has a ``severity`` label and ``summary`` /
``description`` annotations; thresholds come from ``monitoring.slo``. ``for_override`` replaces every
non-zero ``for:`` (tests and end-to-end runs that cannot wait minutes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ai_how.config.models import Monitoring
from ai_how.monitoring import metrics_catalog as m
from ai_how.monitoring.promql import Scope, eq, regex

Severity = Literal["critical", "warning", "info"]
RATE_WINDOW = "5m"
INCREASE_WINDOW = "15m"


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str  # "0s": fires at the first evaluation that matches
    severity: Severity
    summary: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = self.for_
        rule["labels"] = {m.SEVERITY_LABEL: self.severity}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


@dataclass(frozen=True)
class RuleGroup:
    name: str
    rules: tuple[Recording | Alert, ...]

    @property
    def file_name(self) -> str:
        return f"{self.name}.yml"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [rule.to_dict() for rule in self.rules]}


# --------------------------------------------------------------------------- recording rules


def recording_rules(scope: Scope) -> tuple[Recording, ...]:
    by_model = "sum by (cluster, job, model)"
    requests = scope.sel(m.REQUESTS_TOTAL)
    errors = scope.sel(m.REQUESTS_TOTAL, regex("code", "5.."))
    return (
        Recording(
            m.REC_REQUEST_LATENCY_P95,
            "histogram_quantile(0.95, sum by (cluster, job, model_name, le) "
            f"(rate({scope.sel(m.bucket(m.REQUEST_LATENCY))}[{RATE_WINDOW}])))",
        ),
        Recording(m.REC_REQUEST_RATE, f"{by_model} (rate({requests}[{RATE_WINDOW}]))"),
        Recording(
            m.REC_REQUEST_ERROR_RATIO,
            f"{by_model} (rate({errors}[{RATE_WINDOW}])) / {by_model} (rate({requests}[{RATE_WINDOW}]))",
        ),
        Recording(
            m.REC_GENERATION_TOKENS_RATE,
            f"sum by (cluster, job, model_name) (rate({scope.sel(m.GENERATION_TOKENS_TOTAL)}[{RATE_WINDOW}]))",
        ),
        Recording(m.REC_SLURM_GPUS_ALLOC_RATIO, _ratio(scope, m.SLURM_GPUS["alloc"], m.SLURM_GPUS["total"])),
        Recording(m.REC_SLURM_CPUS_ALLOC_RATIO, _ratio(scope, m.SLURM_CPUS["alloc"], m.SLURM_CPUS["total"])),
        Recording(
            m.REC_NODE_CPU_UTILISATION,
            "1 - avg without (cpu, mode) "
            f"(rate({scope.sel(m.NODE_CPU_SECONDS_TOTAL, eq('mode', 'idle'))}[{RATE_WINDOW}]))",
        ),
        Recording(
            m.REC_NODE_MEMORY_UTILISATION,
            f"1 - {scope.sel(m.NODE_MEMORY_AVAILABLE)} / {scope.sel(m.NODE_MEMORY_TOTAL)}",
        ),
    )


def _ratio(scope: Scope, part: str, whole: str) -> str:
    return f"sum by (cluster, job) ({scope.sel(part)}) / (sum by (cluster, job) ({scope.sel(whole)}) > 0)"


# --------------------------------------------------------------------------- alerts


def node_alerts(scope: Scope) -> tuple[Alert, ...]:
    return (
        Alert(
            "NodeDown",
            f"{scope.sel(m.UP, regex('job', '|'.join(m.NODE_JOBS)))} == 0",
            "2m",
            "critical",
            "Node {{ $labels.instance }} is down",
            "The node exporter on {{ $labels.instance }} (cluster {{ $labels.cluster }}) does not answer "
            "scrapes: the machine is down or unreachable.",
        ),
    )


def gpu_alerts(monitoring: Monitoring, scope: Scope) -> tuple[Alert, ...]:
    limit = monitoring.slo.gpu_temperature_celsius
    return (
        Alert(
            "GpuTemperatureHigh",
            f"{scope.sel(m.DCGM_GPU_TEMP)} > {limit}",
            "5m",
            "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is at {{ $value }} degrees C",
            f"Above the limit of {limit} degrees C (monitoring.slo.gpu_temperature_celsius): check cooling "
            "and the load on the node.",
        ),
        Alert(
            "GpuXidError",
            f"{scope.sel(m.DCGM_XID_ERRORS)} > 0",
            "0s",
            "critical",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID error {{ $value }}",
            "The NVIDIA driver reported XID {{ $value }} (see NVIDIA's XID catalogue); the GPU may need a "
            "reset and the node a drain.",
        ),
    )


def slurm_alerts(monitoring: Monitoring, scope: Scope) -> tuple[Alert, ...]:
    pending = monitoring.slo.job_pending_minutes
    return (
        Alert(
            "SlurmNodesDown",
            f"{scope.sel(m.SLURM_NODES['down'])} > 0",
            "5m",
            "critical",
            "{{ $value }} SLURM nodes are down in cluster {{ $labels.cluster }}",
            "sinfo reports nodes in state DOWN; `sinfo -R` says why, `scontrol update nodename=... "
            "state=resume` brings one back.",
        ),
        Alert(
            "SlurmNodesDrained",
            f"{scope.sel(m.SLURM_NODES['drain'])} > 0",
            "15m",
            "warning",
            "{{ $value }} SLURM nodes are drained in cluster {{ $labels.cluster }}",
            "Drained nodes take no new jobs; `sinfo -R` says who drained them and why.",
        ),
        Alert(
            "SlurmJobsPendingTooLong",
            f"{scope.sel(m.SLURM_QUEUE_PENDING)} > 0",
            f"{pending}m",
            "warning",
            "{{ $value }} SLURM jobs are pending in cluster {{ $labels.cluster }}",
            f"Jobs have been waiting for more than {pending} minutes (monitoring.slo.job_pending_minutes); "
            "`squeue --start` shows their reasons.",
        ),
        Alert(
            "SlurmExporterDown",
            f"{scope.sel(m.UP, eq('job', m.JOB_SLURM))} == 0 or {scope.sel(m.SLURM_SCRAPE_ERROR)} > 0",
            "5m",
            "warning",
            "The SLURM exporter {{ $labels.instance }} cannot report",
            "The exporter is down or its last sinfo/squeue call failed: the SLURM alerts are blind until "
            "it reports again.",
        ),
    )


def inference_alerts(monitoring: Monitoring, scope: Scope) -> tuple[Alert, ...]:
    slo = monitoring.slo
    return (
        Alert(
            "InferenceLatencyHigh",
            f"{scope.sel(m.REC_REQUEST_LATENCY_P95)} > {slo.inference_p95_seconds:g}",
            "10m",
            "warning",
            "P95 latency of {{ $labels.model_name }} is {{ $value | humanizeDuration }}",
            f"Above the SLO of {slo.inference_p95_seconds:g}s (monitoring.slo.inference_p95_seconds).",
        ),
        Alert(
            "InferenceErrorRateHigh",
            f"{scope.sel(m.REC_REQUEST_ERROR_RATIO)} > {slo.error_rate:g}",
            "5m",
            "critical",
            "{{ $value | humanizePercentage }} of requests to {{ $labels.model }} fail",
            f"5xx answers are above the SLO of {slo.error_rate:.2%} (monitoring.slo.error_rate).",
        ),
        Alert(
            "ModelServerDown",
            f"{scope.sel(m.UP, eq('job', m.JOB_MODEL_SERVERS))} == 0",
            "2m",
            "critical",
            "Model server {{ $labels.model }} ({{ $labels.instance }}) is down",
            "Its /metrics endpoint does not answer: the server crashed or its pod is not running.",
        ),
    )


def _counter_went_up(scope: Scope, counter: str) -> str:
    """The counter grew in the window, or appeared in it already above zero: the pipeline exporter
    exports a failure counter only once something failed, and ``increase`` misses a series' first value."""
    series = scope.sel(counter)
    return (
        f"increase({series}[{INCREASE_WINDOW}]) > 0 "
        f"or ({series} > 0 unless {series} offset {INCREASE_WINDOW})"
    )


def pipeline_alerts(scope: Scope) -> tuple[Alert, ...]:
    return (
        Alert(
            "ModelSyncFailed",
            _counter_went_up(scope, m.SYNC_FAILURES_TOTAL),
            "0s",
            "warning",
            "Syncing model {{ $labels.model }} to the object store failed",
            "`ai-how sync` failed in the last 15 minutes; the run's log says why, and a re-run resumes.",
        ),
        Alert(
            "PipelineStageFailed",
            _counter_went_up(scope, m.PIPELINE_STAGE_FAILURES_TOTAL),
            "0s",
            "warning",
            "Pipeline stage {{ $labels.stage }} failed",
            "A pipeline run failed in stage {{ $labels.stage }} in the last 15 minutes; "
            "`ai-how pipeline status` shows the run, `ai-how pipeline resume` retries from that stage.",
        ),
        Alert(
            "PipelineExporterDown",
            f"{scope.sel(m.UP, eq('job', m.JOB_PIPELINE))} == 0",
            "5m",
            "warning",
            "The pipeline exporter {{ $labels.instance }} is down",
            "Pipeline, sync and training metrics are missing, and the pipeline alerts are blind.",
        ),
    )


def mlflow_alerts(scope: Scope) -> tuple[Alert, ...]:
    return (
        Alert(
            "MLflowDown",
            f"{scope.sel(m.UP, eq('job', m.JOB_MLFLOW))} == 0",
            "2m",
            "critical",
            "MLflow {{ $labels.instance }} is down",
            "The tracking server does not answer: runs cannot log and the registry cannot be read.",
        ),
    )


# --------------------------------------------------------------------------- groups


def rule_groups(
    monitoring: Monitoring, *, cluster: str | None = None, for_override: str | None = None
) -> list[RuleGroup]:
    """Every rule group, in a fixed order. ``cluster`` scopes every selector to that cluster's series."""
    scope = Scope(cluster)
    groups = [
        RuleGroup("ai-how-recording", recording_rules(scope)),
        RuleGroup("ai-how-nodes", node_alerts(scope)),
        RuleGroup("ai-how-gpu", gpu_alerts(monitoring, scope)),
        RuleGroup("ai-how-slurm", slurm_alerts(monitoring, scope)),
        RuleGroup("ai-how-inference", inference_alerts(monitoring, scope)),
        RuleGroup("ai-how-pipeline", pipeline_alerts(scope)),
        RuleGroup("ai-how-mlflow", mlflow_alerts(scope)),
    ]
    if for_override is None:
        return groups
    return [RuleGroup(g.name, tuple(_with_for(r, for_override) for r in g.rules)) for g in groups]


def _with_for(rule: Recording | Alert, for_: str) -> Recording | Alert:
    if isinstance(rule, Alert) and rule.for_ != "0s":
        return Alert(rule.name, rule.expr, for_, rule.severity, rule.summary, rule.description)
    return rule


def rules_file(group: RuleGroup) -> dict[str, Any]:
    """One group as a Prometheus rule file."""
    return {"groups": [group.to_dict()]}


def alerts(groups: list[RuleGroup]) -> list[Alert]:
    return [rule for group in groups for rule in group.rules if isinstance(rule, Alert)]


def alert_names(groups: list[RuleGroup]) -> list[str]:
    return [alert.name for alert in alerts(groups)]
