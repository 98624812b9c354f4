"""The one connection ai-how opens to a Kubernetes API server, and the verbs it uses on objects.

Built on the official ``kubernetes`` client (the ``infra`` extra, imported lazily), reading answers as
plain JSON (``_preload_content=False``): the client's generated models reject objects that leave out a
field they call required, and custom resources (InferenceService, ServiceMonitor) have no models at all.
Objects are applied with server-side apply (``application/apply-patch+yaml``, field manager ``ai-how``),
so re-applying is idempotent and fields other managers own are left to them. Every failure (no client,
bad kubeconfig, unreachable server, refused credentials, rejected object) is one AiHowError line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.errors import AiHowError

# The content type ai-how patches nodes with: maps merge, lists (spec.taints) are replaced whole.
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "ai-how"


class KubeUnreachableError(AiHowError):
    """The API server did not answer (down, wrong address, TLS failure): worth retrying while it starts."""


class KubeRejectedError(AiHowError):
    """The API server answered with an error status (``status`` holds its HTTP code)."""

    def __init__(self, message: str, *, status: int, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status = status


@dataclass(frozen=True)
class Resource:
    """Where objects of one kind live in the API: ``/api/v1/...`` or ``/apis/GROUP/VERSION/...``."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise AiHowError(f"{self.kind} {name or ''} needs a namespace", fix="set metadata.namespace")
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


# The kinds ai-how renders and applies (one table: adding a kind to a manifest means adding it here).
RESOURCES: dict[tuple[str, str], Resource] = {
    (r.api_version, r.kind): r
    for r in (
        Resource("v1", "Namespace", "namespaces", namespaced=False),
        Resource("v1", "ServiceAccount", "serviceaccounts"),
        Resource("v1", "Secret", "secrets"),
        Resource("v1", "ConfigMap", "configmaps"),
        Resource("v1", "Service", "services"),
        Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Resource("v1", "Pod", "pods"),
        Resource("v1", "Event", "events"),
        Resource("apps/v1", "Deployment", "deployments"),
        Resource("apps/v1", "StatefulSet", "statefulsets"),
        Resource("batch/v1", "Job", "jobs"),
        Resource("networking.k8s.io/v1", "Ingress", "ingresses"),
        Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Resource("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Resource("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices"),
        Resource("serving.kserve.io/v1alpha1", "ServingRuntime", "servingruntimes"),
        Resource("serving.kserve.io/v1alpha1", "ClusterServingRuntime", "clusterservingruntimes", False),
        Resource("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
        Resource("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
        Resource("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules"),
        Resource("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
        Resource("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    )
}


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise AiHowError(
            f"ai-how does not know where {kind} ({api_version}) objects live in the API",
            fix="add the kind to ai_how.kube.client.RESOURCES",
        ) from None


def object_path(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return resource_of(str(obj.get("apiVersion")), str(obj.get("kind"))).path(
        meta.get("name"), meta.get("namespace")
    )


class KubeApi:
    """One API server connection: JSON reads, patches and applies, every failure turned into one line."""

    def __init__(
        self, api_client: Any, core: Any, version: Any, server: str, timeout_s: float, exceptions: Any
    ) -> None:
        self.api_client = api_client
        self.core = core
        self.version_api = version
        self.server = server
        self.timeout_s = timeout_s
        self._exceptions = exceptions

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a client method and return the decoded JSON body."""
        api_exception, urllib3_error = self._exceptions
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout_s, **kwargs)
        except api_exception as exc:
            raise _http_error(self.server, what, exc.status, exc.reason, exc.body) from None
        except (urllib3_error, OSError) as exc:
            raise KubeUnreachableError(
                f"cannot reach the Kubernetes API server at {self.server}: {_reason(exc, self.timeout_s)}",
                fix="check that the control-plane VM runs (`ai-how cloud status`) and that the kubeconfig's "
                "server address is reachable from this machine",
            ) from None
        try:
            return json.loads(response.data or b"{}")
        except ValueError:
            raise AiHowError(
                f"{self.server} answered {what} with something that is not JSON (not a Kubernetes API server?)",
                fix="check the kubeconfig's server address: it must be the API server (usually port 6443)",
            ) from None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One REST call on ``path`` (any resource, custom ones included); the decoded JSON answer."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        return self.call(
            f"{method} {path}",
            self.api_client.call_api,
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    # ---------------------------------------------------------------- objects

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            found: dict[str, Any] = self.request("GET", resource.path(name, namespace))
        except KubeRejectedError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        query = [("fieldSelector", field_selector)] if field_selector else []
        if label_selector:
            query.append(("labelSelector", label_selector))
        return list(self.request("GET", resource.path(None, namespace), query=query).get("items") or [])

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply: creates the object or updates the fields ai-how manages (forcing conflicts,
        as ``kubectl apply --server-side --force-conflicts`` does: the config is the source of truth)."""
        applied: dict[str, Any] = self.request(
            "PATCH",
            object_path(obj),
            body=dict(obj),
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type=APPLY_PATCH,
        )
        return applied

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete the object (its dependents in the background); False when it did not exist."""
        try:
            self.request(
                "DELETE",
                resource.path(name, namespace),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except KubeRejectedError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Events about the object ``name`` in ``namespace``, oldest first."""
        items = self.list_objects(
            RESOURCES[("v1", "Event")], namespace, field_selector=f"involvedObject.name={name}"
        )
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    # ---------------------------------------------------------------- cluster-wide reads used by health

    def version(self) -> str:
        info = self.call("GET /version", self.version_api.get_code)
        return str(info.get("gitVersion", ""))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.call("GET /api/v1/nodes", self.core.list_node).get("items") or [])

    def pods(self) -> list[dict[str, Any]]:
        return list(self.call("GET /api/v1/pods", self.core.list_pod_for_all_namespaces).get("items") or [])

    def patch_node(self, name: str, body: dict[str, Any]) -> None:
        self.call(f"PATCH /api/v1/nodes/{name}", self.core.patch_node, name, body, _content_type=MERGE_PATCH)


def _http_error(server: str, what: str, status: int | None, reason: str | None, body: Any) -> AiHowError:
    message = ""
    with suppress(TypeError, ValueError, AttributeError):
        message = str(json.loads(body).get("message", ""))
    detail = f": {message}" if message else ""
    if status in (401, 403):
        return KubeRejectedError(
            f"the Kubernetes API server at {server} refused {what} (HTTP {status} {reason}){detail}",
            status=status or 0,
            fix="use the cluster's admin kubeconfig (`ai-how cloud kubeconfig`); a token or certificate "
            "from an earlier cluster does not work on a rebuilt one",
        )
    if status is None or status == 0:
        # The client raises ApiException without a status for some transport-level failures.
        return KubeUnreachableError(
            f"cannot reach the Kubernetes API server at {server}: {reason or 'no answer'}",
            fix="check that the control-plane VM runs (`ai-how cloud status`)",
        )
    if status == 404 and "could not find the requested resource" in message:
        fix = "the resource type is not installed: install its CRDs first (`ai-how cloud stack up`)"
    elif status in (400, 409, 422):
        fix = "the object was rejected as written: check the rendered manifest (`ai-how cloud stack render`)"
    else:
        fix = "check the API server's health on the control plane (`kubectl get --raw /readyz?verbose`)"
    return KubeRejectedError(
        f"the Kubernetes API server at {server} answered HTTP {status} {reason} to {what}{detail}",
        status=status,
        fix=fix,
    )


def _reason(exc: BaseException, timeout_s: float) -> str:
    """A short reason from urllib3's wrapped errors (no object reprs)."""
    inner = getattr(exc, "reason", None) or exc
    text = str(inner)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return f"no answer within {timeout_s:g}s"
    if "certificate" in lowered or "ssl" in lowered:
        first = re.sub(r"^.*?\] ", "", text.splitlines()[0])
        return f"TLS error: {first[:200]}"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "the server's host name does not resolve"
    text = re.sub(r"<[^>]*>:\s*", "", text.splitlines()[0] if text else type(inner).__name__)
    return text[:200]


@contextmanager
def connect(kubeconfig: Path, context: str | None, timeout_s: float) -> Iterator[KubeApi]:
    """An API connection from a kubeconfig file, or one AiHowError line saying what to fix."""
    try:
        import urllib3
        import yaml
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        from kubernetes.config.config_exception import ConfigException
    except ModuleNotFoundError as exc:
        raise AiHowError(
            f"module {exc.name!r} is not installed: the Kubernetes client comes with the 'infra' extra",
            fix="pip install 'ai-how[infra]'",
        ) from None
    kubeconfig = Path(kubeconfig).expanduser()
    if not kubeconfig.is_file():
        raise AiHowError(
            f"kubeconfig {kubeconfig} does not exist",
            fix="run `ai-how cloud deploy CONFIG` (it fetches the admin kubeconfig), "
            "or point clusters.cloud.kubeconfig / KUBECONFIG at the cluster's kubeconfig",
        )
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=str(kubeconfig),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AiHowError(
            f"kubeconfig {kubeconfig} is unusable{f' (context {context!r})' if context else ''}: {first}",
            fix="fetch it again with `ai-how cloud kubeconfig`, or name an existing context "
            "(`kubectl config get-contexts`)",
        ) from None
    configuration.retries = 1  # urllib3's default (3) only delays the one-line error
    with client.ApiClient(configuration) as api_client:
        yield KubeApi(
            api_client,
            client.CoreV1Api(api_client),
            client.VersionApi(api_client),
            str(configuration.host),
            timeout_s,
            (ApiException, urllib3.exceptions.HTTPError),
        )
