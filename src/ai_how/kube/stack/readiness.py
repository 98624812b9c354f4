"""When a stack workload is ready (Deployment, StatefulSet, Job), and waiting for it with progress; a
timeout or a failed Job names the object, what is missing and its latest events."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ai_how.errors import AiHowError
from ai_how.kube.client import KubeApi, resource_of

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "Job"})

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str  # "1/1 ready", "complete", "0/1 ready (generation not observed yet)"
    failed: bool = False  # a Job that gave up: waiting longer does not help


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def readiness(obj: Mapping[str, Any] | None) -> Readiness:
    """Whether a live workload (API JSON) is ready; None (absent) is not."""
    if obj is None:
        return Readiness(False, "not applied")
    kind = obj.get("kind")
    status = obj.get("status") or {}
    if kind == "Job":
        if _condition(obj, "Complete"):
            return Readiness(True, "complete")
        failed = _condition(obj, "Failed")
        if failed:
            return Readiness(
                False, f"failed: {failed.get('reason', '')} {failed.get('message', '')}".strip(), True
            )
        return Readiness(False, f"running ({int(status.get('failed') or 0)} failed attempts)")
    wanted = int((obj.get("spec") or {}).get("replicas", 1))
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return Readiness(False, f"0/{wanted} ready (update not rolled out yet)")
    ready_count = int(status.get("availableReplicas" if kind == "Deployment" else "readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if kind == "StatefulSet" and status.get("updateRevision") and status.get("currentRevision"):
        updated = wanted if status["updateRevision"] == status["currentRevision"] else updated
    ok = ready_count >= wanted and updated >= wanted
    return Readiness(ok, f"{ready_count}/{wanted} ready")


def events_text(api: KubeApi, namespace: str, names: list[str], limit: int = 3) -> str:
    """The latest events about the named objects, `Reason: message`, newest last."""
    events: list[dict[str, Any]] = []
    for name in names:
        events += api.events(namespace, name)
    events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    lines = [
        f"{e.get('reason', '')}: {str(e.get('message', '')).splitlines()[0] if e.get('message') else ''}"
        for e in events
    ]
    return "; ".join(lines[-limit:])


def _event_subjects(obj: Mapping[str, Any]) -> list[str]:
    name = str(obj["metadata"]["name"])
    # A StatefulSet's one pod is <name>-0; its scheduling and image errors are reported there.
    return [name, f"{name}-0"] if obj.get("kind") == "StatefulSet" else [name]


def wait_ready(
    api: KubeApi,
    component: str,
    workloads: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float,
    progress: Progress,
    poll_s: float = 2.0,
) -> None:
    """Wait until every workload is ready; one AiHowError naming what is not, with its events."""
    start = time.monotonic()
    last = ""
    for obj in workloads:
        kind, meta = str(obj["kind"]), obj["metadata"]
        namespace, name = str(meta.get("namespace", "")), str(meta["name"])
        resource = resource_of(str(obj["apiVersion"]), kind)
        while True:
            state = readiness(api.get(resource, name, namespace))
            if state.ready:
                break
            elapsed = time.monotonic() - start
            line = f"{component}: waiting for {kind} {name} ({state.detail})"
            if line != last:
                progress(f"{line} [{elapsed:.0f} s]")
                last = line
            if state.failed or elapsed >= timeout_s:
                events = events_text(api, namespace, _event_subjects(obj))
                why = (
                    f"{state.detail}" if state.failed else f"not ready after {timeout_s:g}s ({state.detail})"
                )
                raise AiHowError(
                    f"{component}: {kind} {namespace}/{name} {why}"
                    + (f"; events: {events}" if events else "; no events"),
                    fix=f"kubectl -n {namespace} describe {kind.lower()} {name}; then rerun `ai-how cloud stack up`",
                )
            time.sleep(min(poll_s, max(timeout_s - elapsed, 0.01)))
        progress(f"{component}: {kind} {name} {state.detail}")
