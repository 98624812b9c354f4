"""``ai-how exporter slurm``: SLURM nodes, CPUs, GPUs and queue as Prometheus metrics, read at scrape time.

Metric names follow SckyzO/slurm_exporter (``slurm_nodes_idle``, ``slurm_cpus_alloc``,
``slurm_gpus_total``, ``slurm_queue_pending``, ``slurm_partition_jobs_running{partition}`` ...), so
its dashboards and alert rules work unchanged. When SLURM does not answer, a scrape still succeeds
with ``slurm_exporter_scrape_error 1`` and no SLURM series (absent, not zero).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ai_how.errors import AiHowError
from ai_how.monitoring.exporters.slurm_state import (
    NODE_STATE_GROUPS,
    QUEUE_STATES,
    Resources,
    Snapshot,
    read_snapshot,
)
from ai_how.slurm.transport import Transport


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _resource_gauges(prefix: str, what: str, resources: Resources) -> Iterator[tuple[str, str, int]]:
    yield f"{prefix}cpus_alloc", f"Allocated CPUs{what}", resources.cpus_alloc
    yield f"{prefix}cpus_idle", f"Idle CPUs{what}", resources.cpus_idle
    yield f"{prefix}cpus_other", f"CPUs of down or drained nodes{what}", resources.cpus_other
    yield f"{prefix}cpus_total", f"All CPUs{what}", resources.cpus_total
    yield f"{prefix}gpus_alloc", f"Allocated GPUs (GRES gpu){what}", resources.gpus_alloc
    yield f"{prefix}gpus_idle", f"GPUs free to allocate{what}", resources.gpus_idle
    yield f"{prefix}gpus_other", f"Unallocated GPUs of down or drained nodes{what}", resources.gpus_other
    yield f"{prefix}gpus_total", f"All GPUs (GRES gpu){what}", resources.gpus_total


def snapshot_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot."""
    for group in NODE_STATE_GROUPS:
        yield _gauge(f"slurm_nodes_{group}", f"Nodes in state {group}", snapshot.node_states[group])
    yield _gauge("slurm_nodes_other", "Nodes in any other state", snapshot.node_states["other"])
    yield _gauge("slurm_nodes_total", "All nodes", len(snapshot.nodes))
    for name, documentation, value in _resource_gauges("slurm_", "", snapshot.cluster):
        yield _gauge(name, documentation, value)
    if snapshot.cluster.cpus_total:
        yield _gauge(
            "slurm_cpu_load_ratio",
            "Allocated CPUs / all CPUs",
            snapshot.cluster.cpus_alloc / snapshot.cluster.cpus_total,
        )
    for state in QUEUE_STATES:
        yield _gauge(f"slurm_queue_{state}", f"Jobs in state {state}", snapshot.queue[state])
    partitions = sorted(snapshot.partitions)
    for name, documentation, _ in _resource_gauges("slurm_partition_", " in the partition", Resources()):
        family = GaugeMetricFamily(name, documentation, labels=["partition"])
        attribute = name.removeprefix("slurm_partition_")
        for partition in partitions:
            family.add_metric([partition], getattr(snapshot.partitions[partition], attribute))
        yield family
    for state in ("pending", "running", "suspended", "completing"):
        family = GaugeMetricFamily(
            f"slurm_partition_jobs_{state}", f"Jobs in state {state} in the partition", labels=["partition"]
        )
        for partition in partitions:
            jobs = snapshot.partition_jobs.get(partition)
            family.add_metric([partition], jobs[state] if jobs is not None else 0)
        yield family


class SlurmCollector(Collector):
    """Reads SLURM on every scrape; never raises (a failed read is ``slurm_exporter_scrape_error 1``)."""

    def __init__(self, transport: Transport, timeout_s: float = 10) -> None:
        self.transport, self.timeout_s = transport, timeout_s
        self.last_error = ""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        families: list[Metric] = []
        try:
            families = list(snapshot_metrics(read_snapshot(self.transport, self.timeout_s)))
            self.last_error = ""
        except (AiHowError, ValueError, OSError) as exc:
            message = exc.message if isinstance(exc, AiHowError) else str(exc)
            if message != self.last_error:  # once per distinct failure, not on every scrape
                print(f"slurm exporter: cannot read SLURM: {message}", file=sys.stderr, flush=True)
            self.last_error = message
        yield from families
        yield _gauge(
            "slurm_exporter_scrape_error", "1 when the last read of SLURM failed", 0 if families else 1
        )
        yield _gauge(
            "slurm_exporter_scrape_duration_seconds",
            "Seconds the last read of SLURM took",
            time.monotonic() - started,
        )


def slurm_registry(transport: Transport, timeout_s: float = 10) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SlurmCollector(transport, timeout_s))
    return registry
