"""KServe deployer: a candidate InferenceService per new version, promoted into the production one.

``deploy`` applies (server-side apply, field manager ``ai-how``) the namespace, the S3 credential Secret
(from environment variables, when set) and the ServiceAccount listing it, ai-how's ServingRuntime and an
InferenceService ``<model>-v<N>``, then waits until it is Ready; verify runs against its URL while
``<model>`` keeps serving the previous version. When it does not become Ready, the error says why, from
the InferenceService's conditions, its predictor pods (ImagePullBackOff, CrashLoopBackOff, a failing
storage-initializer) and their events (``Insufficient nvidia.com/gpu``).

``promote`` rolls ``<model>`` to the candidate's spec (Standard mode is a Deployment, whose rolling update
keeps the old pods until the new ones are Ready), records that spec in the state store, and deletes the
candidate. Deploying a version that was in production before (``ai-how pipeline rollback``) restores the
spec recorded for it, image and resources included, rather than rendering a new one.

Needs a Kubernetes API server: ``clusters.cloud.kubeconfig``, else ``$KUBECONFIG``, else the kubeconfig
``ai-how cloud deploy`` fetched.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.deployers.base import DeployError, Deployment, DeployRequest
from ai_how.errors import AiHowError
from ai_how.kube import kserve
from ai_how.kube.client import RESOURCES, KubeApi, connect
from ai_how.layout import Layout
from ai_how.state.store import StateStore

ISVC = RESOURCES[("serving.kserve.io/v1beta1", "InferenceService")]
POD = RESOURCES[("v1", "Pod")]
SECRET = RESOURCES[("v1", "Secret")]
# Pod states that do not get better by waiting (a back-off means a retry failed already).
STUCK_STATES = ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "InvalidImageName", "Error")
# KServe's model transition states that mean the model will not load.
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")


class KServeDeployer:
    name = "kserve"

    def __init__(
        self, config: ClusterConfig, layout: Layout, *, kubeconfig: Path | None = None, poll_s: float = 5.0
    ) -> None:
        self.config = config
        self.layout = layout
        self.kubeconfig = kubeconfig or _kubeconfig(config, layout)
        self.poll_s = poll_s
        self.store = StateStore(layout.root)

    @property
    def namespace(self) -> str:
        return self.config.mlops.serving.namespace

    @property
    def ready_timeout_s(self) -> float:
        return float(self.config.mlops.serving.ready_timeout_s)

    @staticmethod
    def candidate_name(model_name: str, version: int) -> str:
        return f"{model_name}-v{version}"

    def _connect(self) -> Any:
        if self.kubeconfig is None:
            raise DeployError(
                "the kserve backend needs a Kubernetes cluster, and no kubeconfig was found",
                fix="set clusters.cloud.kubeconfig or KUBECONFIG, run `ai-how cloud deploy CONFIG`, "
                "or use mlops.serving.backend: local",
            )
        return connect(self.kubeconfig, None, 30.0)

    # ------------------------------------------------------------------ the record of production specs

    def _history_name(self, model_name: str) -> str:
        return f"kserve/{self.namespace}-{model_name}"

    def recorded_spec(self, model_name: str, version: int) -> dict[str, Any] | None:
        """The InferenceService spec ``version`` had when it was last promoted to production."""
        specs = self.store.read(self._history_name(model_name)).get("specs", {})
        found = specs.get(str(version))
        return copy.deepcopy(found) if found else None

    def _record(self, model_name: str, version: int, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        with self.store.transaction(self._history_name(model_name)) as doc:
            doc.setdefault("specs", {})[str(version)] = {
                "annotations": dict(meta.get("annotations") or {}),
                "labels": dict(meta.get("labels") or {}),
                "spec": copy.deepcopy(obj.get("spec") or {}),
            }
            doc["production"] = version

    # ------------------------------------------------------------------ deploy

    def _manifest(self, request: DeployRequest, name: str) -> dict[str, Any]:
        recorded = self.recorded_spec(request.model_name, request.version)
        if recorded is not None:  # a rollback: the spec that served this version before, exactly
            return {
                "apiVersion": ISVC.api_version,
                "kind": ISVC.kind,
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "annotations": recorded["annotations"],
                    "labels": recorded["labels"],
                },
                "spec": recorded["spec"],
            }
        return kserve.inference_service(self.config, model_version(request), name=name)

    def _prerequisites(self, api: KubeApi) -> None:
        """Namespace, S3 credentials, ServiceAccount and ServingRuntime (idempotent applies)."""
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self.namespace, "labels": dict(kserve.MANAGED_BY)},
            }
        )
        secret = kserve.s3_secret(self.config)
        if secret is not None:
            api.apply(secret)
        elif api.get(SECRET, kserve.s3_secret_name(self.config), self.namespace) is None:
            creds = self.config.mlops.object_store.credentials
            raise DeployError(
                f"the S3 credentials Secret {self.namespace}/{kserve.s3_secret_name(self.config)} does not exist "
                "and cannot be created",
                fix=f"export {creds.access_key_id_env} and {creds.secret_access_key_env} (ai-how creates the "
                "Secret from them), or create it with `kubectl create secret generic`",
            )
        api.apply(kserve.service_account(self.config))
        api.apply(kserve.serving_runtime(self.config))

    def deploy(self, request: DeployRequest) -> Deployment:
        """A candidate InferenceService ``<model>-v<N>`` beside the production one (``<model>``)."""
        if not request.storage_uri.startswith(("s3://", "gs://", "https://", "hf://", "pvc://")):
            raise DeployError(
                f"KServe cannot fetch {request.storage_uri}: its storage-initializer reads object stores",
                fix="set mlops.object_store.backend: s3 (e.g. the stack's SeaweedFS) and run the pipeline again",
            )
        started = time.monotonic()
        name = self.candidate_name(request.model_name, request.version)
        with self._connect() as api:
            self._prerequisites(api)
            manifest = self._manifest(request, name)
            _apply(api, manifest)
            url = self._wait_ready(api, name, request.version)
        return Deployment(
            url, request.model_name, request.version, time.monotonic() - started, {"role": "candidate"}
        )

    def promote(self, model_name: str, version: int) -> Deployment:
        """Roll the production InferenceService to the candidate's spec (new pods Ready before old ones
        go: a Deployment rolling update), record that spec, then delete the candidate."""
        name = self.candidate_name(model_name, version)
        started = time.monotonic()
        with self._connect() as api:
            candidate = api.get(ISVC, name, self.namespace)
            if candidate is None:
                if _serves(api.get(ISVC, model_name, self.namespace), version):  # a resumed promote: done
                    url = self._wait_ready(api, model_name, version)
                    return Deployment(url, model_name, version, 0.0, {"role": "production"})
                raise DeployError(
                    f"{model_name} v{version} has no candidate InferenceService {self.namespace}/{name}",
                    fix="deploy it again (`ai-how pipeline run --resume RUN`)",
                )
            meta = candidate["metadata"]
            production = {
                "apiVersion": ISVC.api_version,
                "kind": ISVC.kind,
                "metadata": {
                    "name": model_name,
                    "namespace": self.namespace,
                    "annotations": dict(meta.get("annotations") or {}),
                    "labels": dict(meta.get("labels") or {}),
                },
                "spec": candidate["spec"],
            }
            _apply(api, production)
            url = self._wait_ready(api, model_name, version)
            self._record(model_name, version, production)
            api.delete(ISVC, name, self.namespace)
        return Deployment(url, model_name, version, time.monotonic() - started, {"role": "production"})

    def canary(self, request: DeployRequest, percent: int) -> Deployment:
        """Knative mode: the production InferenceService gets the new version's spec with
        ``canaryTrafficPercent`` (KServe keeps the last ready revision for the rest of the traffic);
        percent 100 completes the rollout, and the spec is then recorded as production's."""
        if not 0 < percent <= 100:
            raise DeployError(f"--canary {percent} is not a percentage of traffic", fix="use 1-100")
        started = time.monotonic()
        model = model_version(request)
        manifest = kserve.inference_service(
            self.config, model, canary_percent=None if percent == 100 else percent
        )
        if percent != 100 and self.config.mlops.serving.deployment_mode != "Knative":
            kserve.inference_service(self.config, model, canary_percent=percent)  # raises: one line, the fix
        with self._connect() as api:
            if percent != 100 and api.get(ISVC, request.model_name, self.namespace) is None:
                raise DeployError(
                    f"{request.model_name} has no production InferenceService to split traffic with",
                    fix="deploy a first version without --canary",
                )
            self._prerequisites(api)
            _apply(api, manifest)
            url = self._wait_ready(api, request.model_name, request.version)
            if percent == 100:
                self._record(request.model_name, request.version, manifest)
        role = "production" if percent == 100 else f"canary {percent}%"
        return Deployment(
            url, request.model_name, request.version, time.monotonic() - started, {"role": role}
        )

    # ------------------------------------------------------------------ waiting, and why not Ready

    def _wait_ready(self, api: KubeApi, name: str, version: int) -> str:
        """Wait until the InferenceService serves ``version`` (generation observed, Ready); its URL.
        Fails early when a pod or the model is stuck, and on timeout with what is known."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            obj = api.get(ISVC, name, self.namespace)
            if obj is None:
                raise DeployError(
                    f"InferenceService {self.namespace}/{name} disappeared while ai-how waited for it",
                    fix="check whether someone deleted it (`kubectl get events -n "
                    f"{self.namespace}`), then deploy again",
                )
            if _serves(obj, version) and _ready(obj):
                status = obj.get("status") or {}
                return str(status.get("url") or (status.get("address") or {}).get("url"))
            stuck = _model_failure(obj) or _stuck_pod(api, self.namespace, name)
            if stuck:
                raise DeployError(
                    f"InferenceService {self.namespace}/{name} cannot become Ready: {stuck}",
                    fix=f"kubectl describe inferenceservice -n {self.namespace} {name}",
                )
            if time.monotonic() >= deadline:
                raise DeployError(
                    f"InferenceService {self.namespace}/{name} not Ready after {self.ready_timeout_s:.0f} s: "
                    + _why_not_ready(api, self.namespace, name, obj),
                    fix=f"kubectl describe inferenceservice -n {self.namespace} {name}; raise "
                    "mlops.serving.ready_timeout_s if the model only needs longer to load",
                )
            time.sleep(self.poll_s)

    # ------------------------------------------------------------------ the rest of the interface

    def serves(self, model_name: str, version: int) -> bool:
        with self._connect() as api:
            if api.get(ISVC, self.candidate_name(model_name, version), self.namespace) is not None:
                return True
            return _serves(api.get(ISVC, model_name, self.namespace), version)

    def discard(self, model_name: str, version: int) -> bool:
        with self._connect() as api:
            return bool(api.delete(ISVC, self.candidate_name(model_name, version), self.namespace))

    def undeploy(self, model_name: str) -> bool:
        with self._connect() as api:
            return bool(api.delete(ISVC, model_name, self.namespace))

    def endpoint(self, model_name: str) -> str | None:
        with self._connect() as api:
            obj = api.get(ISVC, model_name, self.namespace)
        if obj is None:
            return None
        url = (obj.get("status") or {}).get("url")
        return str(url) if url else None


def model_version(request: DeployRequest) -> kserve.ModelVersion:
    return kserve.ModelVersion(
        name=request.model_name,
        version=request.version,
        storage_uri=request.storage_uri,
        kind=request.kind,
        run_id=request.run_id,
        tracking_uri=request.tracking_uri,
        manifest_sha256=request.manifest_sha256,
    )


def _kubeconfig(config: ClusterConfig, layout: Layout) -> Path | None:
    cloud = config.clusters.cloud
    if cloud is not None and cloud.kubeconfig:
        return Path(cloud.kubeconfig).expanduser()
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"].split(os.pathsep)[0]).expanduser()
    from ai_how.kube.deploy import cloud_paths

    fetched = cloud_paths(layout).kubeconfig  # where `ai-how cloud deploy` puts it
    return fetched if fetched.is_file() else None


def _apply(api: KubeApi, obj: Mapping[str, Any]) -> None:
    try:
        api.apply(obj)
    except AiHowError as exc:
        raise DeployError(exc.message, fix=exc.fix) from None


def _serves(obj: Mapping[str, Any] | None, version: int) -> bool:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return obj is not None and annotations.get(kserve.VERSION_ANNOTATION) == str(version)


def _ready(obj: Mapping[str, Any]) -> bool:
    """Ready for the current spec: the controller observed this generation and says Ready."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    observed = status.get("observedGeneration", meta.get("generation")) == meta.get("generation")
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return bool(observed and ready and (status.get("url") or (status.get("address") or {}).get("url")))


def _model_failure(obj: Mapping[str, Any]) -> str:
    """KServe's verdict that the model will not load (``status.modelStatus``), or ""."""
    model = (obj.get("status") or {}).get("modelStatus") or {}
    if model.get("transitionStatus") not in FAILED_TRANSITIONS:
        return ""
    failure = model.get("lastFailureInfo") or {}
    detail = ": ".join(str(x) for x in (failure.get("reason"), failure.get("message")) if x)
    return f"{model['transitionStatus']}" + (f" ({detail})" if detail else "")


def _predictor_pods(api: KubeApi, namespace: str, name: str) -> list[dict[str, Any]]:
    return api.list_objects(POD, namespace, label_selector=f"serving.kserve.io/inferenceservice={name}")


def _stuck_pod(api: KubeApi, namespace: str, name: str) -> str:
    """The first predictor pod in a state waiting will not fix (its status and message), or ""."""
    from ai_how.kube.health import pod_health

    for pod in _predictor_pods(api, namespace, name):
        health = pod_health(pod)
        if any(health.status.endswith(state) for state in STUCK_STATES):
            return f"pod {health.name} is {health.status}" + (f": {health.message}" if health.message else "")
    return ""


def _why_not_ready(api: KubeApi, namespace: str, name: str, obj: Mapping[str, Any]) -> str:
    """What is known: the conditions that are not True and the warnings about the ISVC and its pods."""
    reasons = [
        f"{c.get('type')}: {c.get('reason') or c.get('status')}"
        + (f" ({c['message']})" if c.get("message") else "")
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") != "True"
    ]
    names = [name, *(p["metadata"]["name"] for p in _predictor_pods(api, namespace, name))]
    for involved in names:
        for event in api.events(namespace, involved):
            if event.get("type") == "Warning":
                reasons.append(f"{event.get('reason')}: {event.get('message')}")
    return "; ".join(dict.fromkeys(reasons)) or "no condition or event says why"
