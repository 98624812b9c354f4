"""``ai-how cloud stack up|down|status``: the rendered stack on the cluster.

``up`` checks the CRDs it needs, creates the Secrets from environment variables (or checks they exist),
then per component in order: Helm releases (through a :class:`HelmRunner`: on the control plane over
SSH), server-side apply of the objects (field manager ``ai-how``), and a wait until its workloads are
ready. ``down`` walks back: deletes only objects that carry ai-how's label, uninstalls its releases, and
removes a namespace ai-how created only when nothing else is left in it. ``status`` reports each
component, ready or not, with its endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube import kserve
from ai_how.kube.client import RESOURCES, KubeApi, KubeRejectedError, connect, resource_of
from ai_how.kube.helm import HelmChart
from ai_how.kube.stack import kserve_charts, objectstore, postgresql
from ai_how.kube.stack.common import labels, postgres_secret_name, s3_secret, service_host, stack
from ai_how.kube.stack.readiness import WORKLOAD_KINDS, readiness, wait_ready
from ai_how.kube.stack.render import Component, stack_components

Progress = Callable[[str], None]
MANAGED_BY_KEY, MANAGED_BY_VALUE = next(iter(kserve.MANAGED_BY.items()))
CRDS = RESOURCES[("apiextensions.k8s.io/v1", "CustomResourceDefinition")]
# Kinds looked at before removing a namespace ai-how created: anything else there keeps it.
LEFTOVER_KINDS = [
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
]
SYSTEM_OBJECTS = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


class HelmRunner(Protocol):
    """Installs and uninstalls pinned charts (``helm upgrade --install --wait --atomic``)."""

    def install(self, chart: HelmChart, values: Mapping[str, Any]) -> None: ...

    def uninstall(self, chart: HelmChart) -> None: ...


@dataclass
class ComponentStatus:
    component: str
    ready: bool
    detail: str
    endpoint: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ours(obj: Mapping[str, Any] | None) -> bool:
    return (
        bool(obj)
        and ((obj or {}).get("metadata") or {}).get("labels", {}).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE
    )


def _ref(obj: Mapping[str, Any]) -> tuple[Any, str, str]:
    meta = obj["metadata"]
    return (
        resource_of(str(obj["apiVersion"]), str(obj["kind"])),
        str(meta["name"]),
        str(meta.get("namespace") or ""),
    )


# --------------------------------------------------------------------------- secrets


def stack_secrets(
    config: ClusterConfig, environ: Mapping[str, str]
) -> list[tuple[str, str, dict[str, Any] | None, tuple[str, ...]]]:
    """(namespace, name, Secret built from the environment or None, the env vars that would build it)."""
    kube, creds, pg = stack(config), config.mlops.object_store.credentials, config.mlops.postgresql
    s3_models = kserve.s3_secret(config, environ)
    s3_stack = None
    if s3_models is not None:
        s3_stack = {
            **s3_models,
            "metadata": {**s3_models["metadata"], "namespace": kube.namespace, "labels": labels("secrets")},
        }
    password = environ.get(pg.password_env)
    db = None
    if password:
        db = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": postgres_secret_name(config),
                "namespace": kube.namespace,
                "labels": labels("secrets"),
            },
            "stringData": {postgresql.USERNAME_KEY: pg.username, postgresql.PASSWORD_KEY: password},
        }
    s3_envs = (creds.access_key_id_env, creds.secret_access_key_env)
    result = [
        (kube.namespace, postgres_secret_name(config), db, (pg.password_env,)),
        (kube.namespace, s3_secret(config), s3_stack, s3_envs),
    ]
    if config.mlops.serving.namespace != kube.namespace:
        result.append((config.mlops.serving.namespace, s3_secret(config), s3_models, s3_envs))
    return result


def _ensure_secrets(
    api: KubeApi, config: ClusterConfig, environ: Mapping[str, str], progress: Progress
) -> None:
    secrets = RESOURCES[("v1", "Secret")]
    for namespace, name, body, envs in stack_secrets(config, environ):
        named = " and ".join(f"${e}" for e in envs)
        if body is not None:
            api.apply(body)
            progress(f"secrets: {namespace}/{name} applied from {named}")
        elif api.get(secrets, name, namespace) is None:
            raise AiHowError(
                f"Secret {namespace}/{name} does not exist and {named} {'are' if len(envs) > 1 else 'is'} not set",
                fix=f"export {' and '.join(envs)} (read when the stack is applied, sent only to the API server), "
                "or create the Secret yourself",
            )


# --------------------------------------------------------------------------- up


def _check_crds(api: KubeApi, components: list[Component]) -> None:
    for component in components:
        if component.needs_crd and api.get(CRDS, component.needs_crd) is None:
            raise AiHowError(
                f"{component.name}: the CRD {component.needs_crd} is not installed in the cluster",
                fix="install the monitoring stack (Prometheus Operator) first, or set "
                "mlops.kubernetes.service_monitors: false",
            )


def _apply_object(api: KubeApi, obj: Mapping[str, Any]) -> str:
    """Apply one object; a Job whose spec changed is replaced (its template is immutable).
    Returns "" or why the object was left alone."""
    resource, name, namespace = _ref(obj)
    if obj["kind"] == "Namespace":
        live = api.get(resource, name)
        if live is not None and not _ours(live):
            return f"namespace {name} exists and was not created by ai-how: left as it is"
    if obj["kind"] == "Job":
        live = api.get(resource, name, namespace)
        key = objectstore.SPEC_HASH_ANNOTATION
        if (
            live is not None
            and (live["metadata"].get("annotations") or {}).get(key) != obj["metadata"]["annotations"][key]
        ):
            api.delete(resource, name, namespace)
    api.apply(obj)
    return ""


def up(
    config: ClusterConfig,
    kubeconfig: Path,
    helm: HelmRunner,
    *,
    progress: Progress,
    environ: Mapping[str, str] | None = None,
    context: str | None = None,
    timeout_s: float = 600,
    poll_s: float = 2.0,
) -> list[ComponentStatus]:
    """Apply the stack in dependency order, waiting for each component; the final status."""
    env = os.environ if environ is None else environ
    components = stack_components(config)
    with connect(kubeconfig, context, 30) as api:
        _check_crds(api, components)
        for component in components:
            for release in component.charts:
                helm.install(release.chart, release.values or {})
            notes = [note for obj in component.objects if (note := _apply_object(api, obj))]
            for note in notes:
                progress(f"{component.name}: {note}")
            if component.objects:
                progress(f"{component.name}: applied {len(component.objects) - len(notes)} objects")
            if component.name == "namespaces":
                _ensure_secrets(api, config, env, progress)
            workloads = [o for o in component.objects if o["kind"] in WORKLOAD_KINDS]
            wait_ready(api, component.name, workloads, timeout_s=timeout_s, progress=progress, poll_s=poll_s)
        return _status(api, config, components)


# --------------------------------------------------------------------------- down


def _leftovers(api: KubeApi, namespace: str) -> list[str]:
    """Objects in ``namespace`` that would go with it and that ai-how does not remove itself."""
    found = []
    for api_version, kind in LEFTOVER_KINDS:
        try:
            items = api.list_objects(resource_of(api_version, kind), namespace)
        except KubeRejectedError as exc:
            if exc.status == 404:  # the kind is not installed (KServe's CRDs)
                continue
            raise
        for item in items:
            meta = item.get("metadata") or {}
            if (kind, meta.get("name")) in SYSTEM_OBJECTS or meta.get("deletionTimestamp"):
                continue
            if kind in ("Secret", "PersistentVolumeClaim") and _ours(item):
                continue  # the Secrets ai-how created; the volumes of its StatefulSets
            found.append(f"{kind} {meta.get('name')}")
    return found


def down(
    config: ClusterConfig,
    kubeconfig: Path,
    helm: HelmRunner,
    *,
    progress: Progress,
    remove_crds: bool = False,
    context: str | None = None,
) -> list[str]:
    """Remove what ``up`` applied, last component first; the objects removed (``Kind ns/name``)."""
    removed: list[str] = []
    components = stack_components(config)
    with connect(kubeconfig, context, 30) as api:
        for component in reversed(components):
            for obj in reversed(component.objects):
                if obj["kind"] == "Namespace":
                    continue
                resource, name, namespace = _ref(obj)
                live = api.get(resource, name, namespace)
                if live is None:
                    continue
                if not _ours(live):
                    progress(
                        f"{component.name}: {obj['kind']} {namespace}/{name} was not applied by ai-how: left alone"
                    )
                    continue
                api.delete(resource, name, namespace)
                removed.append(f"{obj['kind']} {namespace}/{name}")
            for release in reversed(component.charts):
                if release.chart == kserve_charts.KSERVE_CRD and not remove_crds:
                    progress(
                        "kserve: KServe's CRDs stay (removing them deletes every InferenceService); --crds removes them"
                    )
                    continue
                helm.uninstall(release.chart)
                removed.append(f"helm release {release.chart.namespace}/{release.chart.release}")
            if component.objects:
                progress(f"{component.name}: removed")
        secrets = RESOURCES[("v1", "Secret")]
        for namespace, name, _, _ in stack_secrets(config, {}):
            live = api.get(secrets, name, namespace)
            if _ours(live):
                api.delete(secrets, name, namespace)
                removed.append(f"Secret {namespace}/{name}")
        removed += _remove_namespaces(api, components[0].objects, progress)
    return removed


def _remove_namespaces(api: KubeApi, namespaces: list[dict[str, Any]], progress: Progress) -> list[str]:
    removed = []
    resource = RESOURCES[("v1", "Namespace")]
    for obj in reversed(namespaces):
        name = obj["metadata"]["name"]
        live = api.get(resource, name)
        if live is None or not _ours(live):
            continue
        left = _leftovers(api, name)
        if left:
            progress(f"namespaces: kept {name}: it holds {', '.join(left[:5])} (not ai-how's stack)")
            continue
        api.delete(resource, name)
        removed.append(f"Namespace {name}")
    return removed


# --------------------------------------------------------------------------- status


def _endpoint(config: ClusterConfig, component: str) -> str:
    kube = stack(config)
    if component == "objectstore":
        endpoint = objectstore.in_cluster_endpoint(config)
        if kube.object_store_host_port and config.mlops.object_store.endpoint:
            endpoint += f" (workstation: {config.mlops.object_store.endpoint})"
        return endpoint
    if component == "postgresql":
        return f"postgresql://{service_host(config, 'postgresql')}:5432/{config.mlops.postgresql.database}"
    if component == "mlflow":
        return f"http://{kube.mlflow_host}"
    if component == "kserve":
        return f"http://<model>-{config.mlops.serving.namespace}.{kube.ingress_domain}"
    return ""


def _component_status(api: KubeApi, config: ClusterConfig, component: Component) -> ComponentStatus:
    missing, waiting = [], []
    for obj in component.objects:
        resource, name, namespace = _ref(obj)
        live = api.get(resource, name, namespace)
        if live is None:
            missing.append(f"{obj['kind']} {name}")
        elif obj["kind"] in WORKLOAD_KINDS and not (state := readiness(live)).ready:
            waiting.append(f"{obj['kind']} {name} {state.detail}")
    # What the charts run (helm created it): MLflow's Deployment, KServe's controller.
    chart_workloads = {
        "mlflow": ("mlflow", stack(config).namespace),
        "kserve": (kserve_charts.CONTROLLER_DEPLOYMENT, kserve_charts.KSERVE_NAMESPACE),
    }
    if component.name in chart_workloads:
        name, namespace = chart_workloads[component.name]
        live = api.get(RESOURCES[("apps/v1", "Deployment")], name, namespace)
        if live is None:
            missing.append(f"Deployment {namespace}/{name} (helm release)")
        elif not (state := readiness(live)).ready:
            waiting.append(f"Deployment {name} {state.detail}")
    problems = [f"not applied: {', '.join(missing)}"] if missing else []
    problems += waiting
    detail = "; ".join(problems) or "ready"
    return ComponentStatus(component.name, not problems, detail, _endpoint(config, component.name))


def _status(api: KubeApi, config: ClusterConfig, components: list[Component]) -> list[ComponentStatus]:
    return [_component_status(api, config, c) for c in components]


def status(config: ClusterConfig, kubeconfig: Path, *, context: str | None = None) -> list[ComponentStatus]:
    """Each component: ready or what is missing/not ready, and its endpoint."""
    components = stack_components(config)
    with connect(kubeconfig, context, 30) as api:
        return _status(api, config, components)
