"""KServe deployer: a candidate InferenceService per new version, promoted into the production one.

``deploy`` applies the ServingRuntime and an InferenceService ``<model>-v<N>`` and waits until it
is Ready; verify runs against its URL while ``<model>`` keeps serving the previous version.
``promote`` rolls ``<model>`` to the candidate's spec (KServe's Standard mode is a Deployment, whose
rolling update keeps the old pods until the new ones are Ready) and deletes the candidate.

Needs a Kubernetes API server (``clusters.cloud.kubeconfig`` or $KUBECONFIG); none can run on
the CI machine, so this path is covered by manifest tests and a live test that runs only
when KUBECONFIG is set.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.deployers.base import DeployError, Deployment, DeployRequest
from ai_how.layout import Layout
from ai_how.serving import isvc

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
READY_TIMEOUT_S = 600.0
POLL_S = 5.0


class KServeDeployer:
    name = "kserve"

    def __init__(self, config: ClusterConfig, layout: Layout, api: Any = None) -> None:
        """``api``: a CustomObjectsApi (default: one built from the kubeconfig on first use)."""
        self.config = config
        self.layout = layout
        self._client = api
        cloud = config.clusters.cloud
        self.kubeconfig = (cloud.kubeconfig if cloud and cloud.kubeconfig else None) or os.environ.get(
            "KUBECONFIG"
        )
        self.image = os.environ.get("AI_HOW_SERVER_IMAGE", "ai-how/model-server:latest")

    def _api(self) -> Any:
        if self._client is not None:
            return self._client
        if not self.kubeconfig or not os.path.exists(os.path.expanduser(self.kubeconfig)):
            raise DeployError(
                "the kserve backend needs a Kubernetes cluster, and no kubeconfig was found",
                fix="set clusters.cloud.kubeconfig or KUBECONFIG, or use mlops.serving.backend: local",
            )
        from kubernetes import client, config

        config.load_kube_config(config_file=os.path.expanduser(self.kubeconfig))
        self._client = client.CustomObjectsApi()
        return self._client

    @property
    def namespace(self) -> str:
        return self.config.mlops.serving.namespace

    @staticmethod
    def candidate_name(model_name: str, version: int) -> str:
        return f"{model_name}-v{version}"

    def _manifest(self, request: DeployRequest, name: str) -> dict[str, Any]:
        manifest = isvc.inference_service(
            self.config,
            request.model_name,
            request.version,
            request.storage_uri,
            run_id=request.run_id,
            tracking_uri=request.tracking_uri,
            manifest_sha256=request.manifest_sha256,
        )
        manifest["metadata"]["name"] = name
        return manifest

    def _apply(self, api: Any, group_version: str, plural: str, body: dict[str, Any]) -> None:
        """Create the object, or patch it when it exists."""
        from kubernetes.client.exceptions import ApiException

        version = group_version.split("/")[1]
        name = body["metadata"]["name"]
        try:
            try:
                api.create_namespaced_custom_object(GROUP, version, self.namespace, plural, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                api.patch_namespaced_custom_object(GROUP, version, self.namespace, plural, name, body)
        except ApiException as exc:
            raise DeployError(f"Kubernetes refused {plural}/{name}: {exc.status} {exc.reason}") from None

    def _wait_ready(self, api: Any, name: str, version: int) -> str:
        """Wait until the InferenceService serves ``version`` (its generation observed, Ready); its URL."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            status = obj.get("status", {})
            annotations = obj.get("metadata", {}).get("annotations", {})
            current = annotations.get(f"{isvc.ANNOTATION_PREFIX}/mlflow-model-version") == str(version)
            observed = status.get("observedGeneration", obj["metadata"].get("generation")) == obj[
                "metadata"
            ].get("generation")
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
            )
            if current and observed and ready and status.get("url"):
                return str(status["url"])
            time.sleep(POLL_S)
        raise DeployError(
            f"InferenceService {self.namespace}/{name} not Ready after {READY_TIMEOUT_S:.0f} s",
            fix=f"kubectl describe inferenceservice -n {self.namespace} {name}",
        )

    def deploy(self, request: DeployRequest) -> Deployment:
        """A candidate InferenceService ``<model>-v<N>`` beside the production one (``<model>``)."""
        api = self._api()
        started = time.monotonic()
        self._apply(api, f"{GROUP}/v1alpha1", "servingruntimes", isvc.serving_runtime(self.image))
        name = self.candidate_name(request.model_name, request.version)
        manifest = self._manifest(request, name)
        self._apply(api, f"{GROUP}/{VERSION}", PLURAL, manifest)
        url = self._wait_ready(api, name, request.version)
        return Deployment(
            url, request.model_name, request.version, time.monotonic() - started, {"role": "candidate"}
        )

    def promote(self, model_name: str, version: int) -> Deployment:
        """Roll the production InferenceService to the candidate's spec (new pods Ready before old ones
        go: a Deployment rolling update), then delete the candidate."""
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        name = self.candidate_name(model_name, version)
        try:
            candidate = api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404 and self._production_serves(
                api, model_name, version
            ):  # a resumed promote: done
                return Deployment(self._wait_ready(api, model_name, version), model_name, version, 0.0, {})
            raise DeployError(
                f"{model_name} v{version} has no candidate InferenceService {self.namespace}/{name}",
                fix="deploy it again (`ai-how pipeline run --resume RUN`)",
            ) from exc
        production = {
            "apiVersion": candidate["apiVersion"],
            "kind": candidate["kind"],
            "metadata": {
                "name": model_name,
                "namespace": self.namespace,
                "annotations": candidate["metadata"].get("annotations", {}),
                "labels": candidate["metadata"].get("labels", {}),
            },
            "spec": candidate["spec"],
        }
        started = time.monotonic()
        self._apply(api, f"{GROUP}/{VERSION}", PLURAL, production)
        url = self._wait_ready(api, model_name, version)
        self.discard(model_name, version)
        return Deployment(url, model_name, version, time.monotonic() - started, {"role": "production"})

    def serves(self, model_name: str, version: int) -> bool:
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        try:
            api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.candidate_name(model_name, version)
            )
        except ApiException:
            return self._production_serves(api, model_name, version)
        return True

    def _production_serves(self, api: Any, model_name: str, version: int) -> bool:
        """Whether the production InferenceService already carries ``version``."""
        from kubernetes.client.exceptions import ApiException

        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, model_name)
        except ApiException:
            return False
        annotations = obj.get("metadata", {}).get("annotations", {})
        return bool(annotations.get(f"{isvc.ANNOTATION_PREFIX}/mlflow-model-version") == str(version))

    def discard(self, model_name: str, version: int) -> bool:
        return self._delete(self.candidate_name(model_name, version))

    def _delete(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self._api().delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise DeployError(f"cannot delete InferenceService {name}: {exc.reason}") from None
        return True

    def undeploy(self, model_name: str) -> bool:
        return self._delete(model_name)

    def endpoint(self, model_name: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._api().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, model_name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeployError(f"cannot read InferenceService {model_name}: {exc.reason}") from None
        return obj.get("status", {}).get("url")  # type: ignore[no-any-return]
