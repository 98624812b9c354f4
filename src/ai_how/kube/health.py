"""Kubernetes cluster health from the API server: nodes, GPUs, failing pods, system and GPU-operator pods.

Also the two node steps of ``ai-how cloud deploy`` that need the API: waiting for every node to be
``Ready`` and applying the config's labels and taints (only what differs, so re-running sends nothing).

Talks to the API server with the official ``kubernetes`` client (the ``infra`` extra, imported lazily)
and reads its answers as plain JSON (``_preload_content=False``): the client's generated models reject
objects that leave out a field they call required, and a health check must not fail on that.
Every failure (no client, bad kubeconfig, unreachable server, refused credentials) is one AiHowError line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ai_how.config.models import Taint
from ai_how.errors import AiHowError
from ai_how.kube.client import KubeUnreachableError, connect

GPU_RESOURCE = "nvidia.com/gpu"
SYSTEM_NAMESPACE = "kube-system"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
# Waiting reasons of a container that starts normally; any other waiting reason is a failure.
STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- results


@dataclass
class NodeHealth:
    name: str
    ready: bool
    ready_reason: str  # why not Ready (the condition's reason and message); "" when Ready
    roles: list[str]
    kubelet_version: str
    gpus_allocatable: int
    gpus_capacity: int
    taints: list[str]  # kubectl/Kubespray form: key=value:Effect
    unschedulable: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PodHealth:
    namespace: str
    name: str
    phase: str
    status: (
        str  # what kubectl's STATUS column says: CrashLoopBackOff, Init:ImagePullBackOff, Running, Completed
    )
    ready_containers: int
    containers: int
    restarts: int
    node: str
    failing: bool
    message: str = ""  # the waiting/terminated message of the failing container, or the pod's

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusterHealth:
    server: str
    server_version: str
    nodes: list[NodeHealth] = field(default_factory=list)
    failing_pods: list[PodHealth] = field(default_factory=list)  # every namespace
    system_pods: list[PodHealth] = field(default_factory=list)  # kube-system
    gpu_operator_pods: list[PodHealth] = field(default_factory=list)  # gpu-operator

    @property
    def healthy(self) -> bool:
        """Every node Ready and no pod failing."""
        return bool(self.nodes) and all(n.ready for n in self.nodes) and not self.failing_pods

    @property
    def gpus_allocatable(self) -> int:
        return sum(n.gpus_allocatable for n in self.nodes)

    def problems(self) -> list[str]:
        """One line per thing that makes the cluster unhealthy."""
        lines = [f"node {n.name} is not Ready: {n.ready_reason}" for n in self.nodes if not n.ready]
        if not self.nodes:
            lines.append("the cluster has no nodes")
        for pod in self.failing_pods:
            detail = f" ({pod.restarts} restarts)" if pod.restarts else ""
            lines.append(f"pod {pod.namespace}/{pod.name} is {pod.status}{detail}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "server_version": self.server_version,
            "healthy": self.healthy,
            "gpus_allocatable": self.gpus_allocatable,
            "nodes": [n.to_json() for n in self.nodes],
            "failing_pods": [p.to_json() for p in self.failing_pods],
            "system_pods": [p.to_json() for p in self.system_pods],
            "gpu_operator_pods": [p.to_json() for p in self.gpu_operator_pods],
            "problems": self.problems(),
        }


# --------------------------------------------------------------------------- reading objects


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _quantity(resources: Mapping[str, Any] | None, name: str) -> int:
    """An extended resource count ("1"); extended resources are whole numbers."""
    raw = (resources or {}).get(name)
    try:
        return int(str(raw)) if raw is not None else 0
    except ValueError:
        return 0


def node_health(node: Mapping[str, Any]) -> NodeHealth:
    """A Node object (API JSON) as a NodeHealth."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    roles = sorted(key[len(ROLE_LABEL_PREFIX) :] for key in labels if key.startswith(ROLE_LABEL_PREFIX))
    if not roles and labels.get("kubernetes.io/role"):
        roles = [labels["kubernetes.io/role"]]
    ready = _condition(node, "Ready")
    is_ready = bool(ready and ready.get("status") == "True")
    reason = ""
    if not is_ready:
        if ready is None:
            reason = "the node reports no Ready condition yet"
        else:
            state = "Unknown" if ready.get("status") == "Unknown" else "NotReady"
            parts = [state, ready.get("reason") or "", ready.get("message") or ""]
            reason = ": ".join(p for p in parts if p)
    return NodeHealth(
        name=str(meta.get("name", "")),
        ready=is_ready,
        ready_reason=reason,
        roles=roles,
        kubelet_version=str((status.get("nodeInfo") or {}).get("kubeletVersion", "")),
        gpus_allocatable=_quantity(status.get("allocatable"), GPU_RESOURCE),
        gpus_capacity=_quantity(status.get("capacity"), GPU_RESOURCE),
        taints=[_taint_text(t) for t in spec.get("taints") or []],
        unschedulable=bool(spec.get("unschedulable", False)),
    )


def _taint_text(taint: Mapping[str, Any]) -> str:
    value = taint.get("value") or ""
    return f"{taint.get('key', '')}{'=' + value if value else ''}:{taint.get('effect', '')}"


def _container_problem(statuses: Sequence[Mapping[str, Any]], prefix: str) -> tuple[str, str] | None:
    """The first container that cannot run: (status, message)."""
    for cs in statuses:
        state = cs.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") and waiting["reason"] not in STARTING_REASONS:
            return prefix + str(waiting["reason"]), _message_of(waiting, cs)
        terminated = state.get("terminated")
        if prefix and terminated and terminated.get("exitCode", 0) != 0:
            return prefix + str(terminated.get("reason") or "Error"), _message_of(terminated, cs)
    return None


def _message_of(state: Mapping[str, Any], cs: Mapping[str, Any]) -> str:
    message = str(state.get("message") or "")
    if not message:
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if last:
            message = f"last exit {last.get('exitCode', '?')} ({last.get('reason') or 'Error'})"
    return message.splitlines()[0][:300] if message else ""


def pod_health(pod: Mapping[str, Any]) -> PodHealth:
    """A Pod object (API JSON) as a PodHealth; ``failing`` for pods not Running/Succeeded or with a broken container."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    containers: list[Mapping[str, Any]] = status.get("containerStatuses") or []
    init: list[Mapping[str, Any]] = status.get("initContainerStatuses") or []
    n_containers = len(containers) or len((pod.get("spec") or {}).get("containers") or [])
    problem = None
    if phase != "Succeeded":
        problem = _container_problem(init, "Init:") or _container_problem(containers, "")
    if problem is None and phase not in ("Running", "Succeeded"):
        problem = _phase_problem(pod, phase, containers)
    shown = "Completed" if phase == "Succeeded" else phase
    return PodHealth(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        phase=phase,
        status=problem[0] if problem else shown,
        ready_containers=sum(1 for cs in containers if cs.get("ready")),
        containers=n_containers,
        restarts=sum(int(cs.get("restartCount") or 0) for cs in [*init, *containers]),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        failing=problem is not None,
        message=problem[1] if problem else "",
    )


def _phase_problem(
    pod: Mapping[str, Any], phase: str, containers: Sequence[Mapping[str, Any]]
) -> tuple[str, str]:
    status = pod.get("status") or {}
    if status.get("reason"):  # Evicted, NodeLost, UnexpectedAdmissionError, ...
        return str(status["reason"]), str(status.get("message") or "")
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return str(scheduled.get("reason") or "Unschedulable"), str(scheduled.get("message") or "")
    for cs in containers:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"]), str(waiting.get("message") or "")
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated and terminated.get("reason"):
            return str(terminated["reason"]), _message_of(terminated, cs)
    return phase, str(status.get("message") or "")


# --------------------------------------------------------------------------- public checks


def cluster_health(kubeconfig: Path, *, context: str | None = None, timeout_s: float = 10) -> ClusterHealth:
    """Nodes, failing pods, kube-system and GPU-operator pods of the cluster the kubeconfig names."""
    with connect(kubeconfig, context, timeout_s) as api:
        version = api.version()
        nodes = [node_health(n) for n in api.nodes()]
        pods = [pod_health(p) for p in api.pods()]
        server = api.server
    pods.sort(key=lambda p: (p.namespace, p.name))
    return ClusterHealth(
        server=server,
        server_version=version,
        nodes=sorted(nodes, key=lambda n: n.name),
        failing_pods=[p for p in pods if p.failing],
        system_pods=[p for p in pods if p.namespace == SYSTEM_NAMESPACE],
        gpu_operator_pods=[p for p in pods if p.namespace == GPU_OPERATOR_NAMESPACE],
    )


def wait_nodes_ready(
    kubeconfig: Path,
    expected: list[str],
    timeout_s: float,
    progress: Progress | None = None,
    *,
    context: str | None = None,
    poll_s: float = 5.0,
    request_timeout_s: float = 10,
) -> list[NodeHealth]:
    """Wait until every expected node is registered and Ready; the nodes, in ``expected`` order.

    An unreachable API server is retried until the deadline (it restarts during bring-up); a bad
    kubeconfig or refused credentials fail at once. Progress gets one line whenever the state changes.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last_line = ""
    while True:
        waiting_for: list[str]
        seen: dict[str, NodeHealth]
        try:
            with connect(kubeconfig, context, request_timeout_s) as api:
                seen = {n.name: n for n in (node_health(obj) for obj in api.nodes())}
        except KubeUnreachableError as exc:
            seen, waiting_for = {}, [f"API server: {exc.message}"]
        else:
            waiting_for = [
                f"{name} ({seen[name].ready_reason})" if name in seen else f"{name} (not registered)"
                for name in expected
                if name not in seen or not seen[name].ready
            ]
            if not waiting_for:
                if progress:
                    progress(f"all {len(expected)} nodes Ready")
                return [seen[name] for name in expected]
        ready = sum(1 for name in expected if name in seen and seen[name].ready)
        line = f"{ready}/{len(expected)} nodes Ready; waiting for {', '.join(waiting_for)}"
        if progress and line != last_line:
            progress(f"[{time.monotonic() - start:.0f}s] {line}")
            last_line = line
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AiHowError(
                f"nodes not Ready after {timeout_s:g}s: {', '.join(waiting_for)}",
                fix="on each such node check `systemctl status kubelet` and `journalctl -u kubelet`; "
                "a node that never registered did not join the cluster: see the Kubespray log",
            )
        time.sleep(min(poll_s, remaining))


def _taint_patch(
    current: Sequence[Mapping[str, Any]], wanted: Sequence[Taint]
) -> list[dict[str, Any]] | None:
    """The node's taint list with the wanted ones added or their value updated; None when nothing changes.

    A taint is identified by key and effect (as kubectl does); taints ai-how did not ask for are kept.
    """
    taints = [dict(t) for t in current]
    changed = False
    for want in wanted:
        match = next((t for t in taints if t.get("key") == want.key and t.get("effect") == want.effect), None)
        if match is None:
            entry = {"key": want.key, "effect": want.effect}
            if want.value:
                entry["value"] = want.value
            taints.append(entry)
            changed = True
        elif (match.get("value") or "") != want.value:
            match["value"] = want.value
            changed = True
    return taints if changed else None


def apply_node_labels_taints(
    kubeconfig: Path,
    nodes: Mapping[str, tuple[Mapping[str, str], Sequence[Taint]]],
    *,
    context: str | None = None,
    timeout_s: float = 10,
) -> dict[str, dict[str, Any]]:
    """Set the given labels and taints on each node, patching only what differs; the patches sent.

    Labels and taints the config does not name are left alone (Kubernetes and operators set their own).
    A second call with the same input sends nothing and returns ``{}``.
    """
    sent: dict[str, dict[str, Any]] = {}
    with connect(kubeconfig, context, timeout_s) as api:
        existing = {str((n.get("metadata") or {}).get("name")): n for n in api.nodes()}
        missing = sorted(set(nodes) - set(existing))
        if missing:
            raise AiHowError(
                f"node(s) {', '.join(missing)} are not in the cluster at {api.server} "
                f"(it has: {', '.join(sorted(existing)) or 'none'})",
                fix="wait for the nodes to join (`ai-how cloud deploy` waits for them), "
                "or check the node names in the config",
            )
        for name, (labels, taints) in nodes.items():
            node = existing[name]
            current_labels: Mapping[str, str] = (node.get("metadata") or {}).get("labels") or {}
            body: dict[str, Any] = {}
            label_changes = {k: v for k, v in labels.items() if current_labels.get(k) != v}
            if label_changes:
                body["metadata"] = {"labels": label_changes}
            new_taints = _taint_patch((node.get("spec") or {}).get("taints") or [], taints)
            if new_taints is not None:
                body["spec"] = {"taints": new_taints}
            if body:
                api.patch_node(name, body)
                sent[name] = body
    return sent
