"""``ai-how status``: one view of health across both clusters, the MLOps services, monitoring and runs.

Each area is asked with the check ai-how already has for it (libvirt for VMs, SLURM's own commands,
the Kubernetes health check, the local stack's health endpoints, Prometheus' and Alertmanager's APIs,
the state store). An area that is not part of the config is left out; one that cannot be asked is a
``failing`` row saying why, so one broken area never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ai_how.config.loader import LoadedConfig
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.state.store import StateStore

State = Literal["ok", "failing", "unknown"]
RECENT_RUNS = 5
HTTP_TIMEOUT_S = 3.0


@dataclass
class Component:
    area: str  # hpc | cloud | mlops | monitoring | pipeline
    name: str
    state: State
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatusReport:
    components: list[Component]

    @property
    def healthy(self) -> bool:
        return all(c.state != "failing" for c in self.components)

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "components": [c.to_json() for c in self.components]}


Check = Callable[[LoadedConfig, Layout, StateStore], Iterator[Component]]


def _guarded(
    area: str, name: str, check: Check, loaded: LoadedConfig, layout: Layout, store: StateStore
) -> list[Component]:
    """Run one check; any failure becomes one failing row instead of stopping the report."""
    try:
        return list(check(loaded, layout, store))
    except AiHowError as exc:
        return [Component(area, name, "failing", exc.message + (f" ({exc.fix})" if exc.fix else ""))]
    except OSError as exc:
        return [Component(area, name, "failing", str(exc))]


# --------------------------------------------------------------------------- VMs and clusters


def _vms(side: Literal["hpc", "cloud"]) -> Check:
    def check(loaded: LoadedConfig, layout: Layout, store: StateStore) -> Iterator[Component]:
        from ai_how.provision.journal import Journal

        if getattr(loaded.config.clusters, side) is None:
            return
        recorded = Journal(store, side).info()
        if not recorded.get("uri"):
            yield Component(side, "VMs", "unknown", f"not started here (`ai-how {side} start CONFIG`)")
            return
        from ai_how.provision.libvirt_conn import connect
        from ai_how.provision.lifecycle import ClusterLifecycle
        from ai_how.provision.spec import cluster_definition

        uri = str(recorded["uri"])
        cluster = cluster_definition(loaded, side, layout, uri=uri)
        with connect(uri) as conn:
            rows = ClusterLifecycle(cluster, conn, store, uri=uri, progress=lambda _m: None).status()
        for row in rows:
            state: State = "ok" if row.state == "running" else "failing"
            yield Component(side, f"VM {row.name}", state, f"{row.state}, {row.ip_address}")

    return check


def _slurm(loaded: LoadedConfig, layout: Layout, store: StateStore) -> Iterator[Component]:
    hpc = loaded.config.clusters.hpc
    if hpc is None or hpc.scheduler != "slurm":
        return
    from ai_how.monitoring.exporters.slurm_state import read_snapshot
    from ai_how.slurm.transport import transport_for

    # The SLURM exporter's own reading of sinfo/squeue, here or over SSH on the login node.
    snapshot = read_snapshot(transport_for(hpc.slurm.login, hpc.slurm.ssh_options))
    states, cluster = snapshot.node_states, snapshot.cluster
    bad = states.get("down", 0) + states.get("drain", 0) + states.get("fail", 0)
    yield Component(
        "hpc",
        "SLURM nodes",
        "failing" if bad or not snapshot.nodes else "ok",
        f"{len(snapshot.nodes)} nodes ({states.get('down', 0)} down, {states.get('drain', 0)} drained); "
        f"GPUs {cluster.gpus_alloc}/{cluster.gpus_total} allocated",
    )
    yield Component(
        "hpc",
        "SLURM queue",
        "ok",
        f"{snapshot.queue.get('running', 0)} running, {snapshot.queue.get('pending', 0)} pending",
    )


def _kubernetes(loaded: LoadedConfig, layout: Layout, store: StateStore) -> Iterator[Component]:
    from ai_how.kube.deploy import kubeconfig_path

    if loaded.config.clusters.cloud is None and loaded.config.mlops.serving.backend != "kserve":
        return
    path = kubeconfig_path(loaded.config, layout)
    if not path.is_file():
        yield Component("cloud", "Kubernetes", "unknown", "no kubeconfig yet (`ai-how cloud deploy CONFIG`)")
        return
    from ai_how.kube.health import cluster_health

    health = cluster_health(path)
    for node in health.nodes:
        detail = f"{', '.join(node.roles) or 'worker'}, kubelet {node.kubelet_version}, GPUs {node.gpus_allocatable}"
        yield Component(
            "cloud",
            f"node {node.name}",
            "ok" if node.ready else "failing",
            detail if node.ready else f"NotReady: {node.ready_reason}",
        )
    for problem in health.problems():
        if not problem.startswith("node "):
            yield Component("cloud", "pods", "failing", problem)


# --------------------------------------------------------------------------- MLOps services


def _mlops(loaded: LoadedConfig, layout: Layout, store: StateStore) -> Iterator[Component]:
    from ai_how.stack import services

    for status in services.status(loaded.config, layout):
        where = f"{status.url}" + (f" ({status.note})" if status.note else "")
        yield Component("mlops", status.name, "ok" if status.healthy else "failing", where)


# --------------------------------------------------------------------------- monitoring


def _get_json(url: str) -> Any:
    import httpx

    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return response.json()
    except httpx.HTTPError as exc:
        raise AiHowError(f"{url}: {exc}", fix="is it running? `ai-how stack status -c CONFIG`") from None


def _monitoring(loaded: LoadedConfig, layout: Layout, store: StateStore) -> Iterator[Component]:
    monitoring = loaded.config.monitoring
    if not monitoring.prometheus.enabled:
        return
    prometheus = f"http://{monitoring.prometheus.host}:{monitoring.prometheus.port}"
    from ai_how.monitoring.embedded import targets_health

    targets = _get_json(f"{prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
    detail, all_up = targets_health(targets)
    yield Component("monitoring", "Prometheus targets", "ok" if all_up else "failing", detail)
    alerts = _get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    firing = [a for a in alerts if a.get("state") == "firing"]
    for alert in firing:
        labels = alert.get("labels", {})
        summary = (alert.get("annotations") or {}).get("summary", "")
        yield Component(
            "monitoring",
            f"alert {labels.get('alertname')}",
            "failing",
            f"{labels.get('severity', '')}: {summary}".strip(": "),
        )
    if not firing:
        yield Component(
            "monitoring", "alerts", "ok", f"none firing ({len(alerts)} pending)" if alerts else "none firing"
        )
    if monitoring.alertmanager.enabled:
        alertmanager = f"http://{monitoring.alertmanager.host}:{monitoring.alertmanager.port}"
        active = _get_json(f"{alertmanager}/api/v2/alerts?active=true&silenced=false&inhibited=false")
        yield Component("monitoring", "Alertmanager", "ok", f"{len(active)} active alerts received")


# --------------------------------------------------------------------------- pipeline runs


def _runs(loaded: LoadedConfig, layout: Layout, store: StateStore) -> Iterator[Component]:
    docs = [store.read(name) for name in store.names("runs")]
    docs.sort(key=lambda d: str(d.get("created") or ""))
    latest_by_model: dict[str, str] = {}
    for doc in docs:
        latest_by_model[str(doc.get("model_name"))] = str(doc.get("run_id"))
    for doc in docs[-RECENT_RUNS:]:
        status = str(doc.get("status") or "unknown")
        latest = latest_by_model.get(str(doc.get("model_name"))) == doc.get("run_id")
        # Only a model's latest run failing is a problem: an older failure was followed by another run.
        state: State = (
            "failing" if status == "failed" and latest else "ok" if status != "running" else "unknown"
        )
        detail = f"{doc.get('workload')} → {doc.get('model_name')}: {status}"
        if doc.get("failed_stage"):
            detail += f" at {doc['failed_stage']}"
        yield Component("pipeline", f"run {doc.get('run_id')}", state, detail)


CHECKS: list[tuple[str, str, Check]] = [
    ("hpc", "VMs", _vms("hpc")),
    ("hpc", "SLURM", _slurm),
    ("cloud", "VMs", _vms("cloud")),
    ("cloud", "Kubernetes", _kubernetes),
    ("mlops", "services", _mlops),
    ("monitoring", "Prometheus", _monitoring),
    ("pipeline", "runs", _runs),
]


def collect(loaded: LoadedConfig, store: StateStore) -> StatusReport:
    layout = Layout(store.root)
    components: list[Component] = []
    for area, name, check in CHECKS:
        components.extend(_guarded(area, name, check, loaded, layout, store))
    return StatusReport(components)
