"""KServe deployer: applies the ServingRuntime + InferenceService to a real cluster and waits for Ready.

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


class KServeDeployer:
    name = "kserve"

    def __init__(self, config: ClusterConfig, layout: Layout) -> None:
        self.config = config
        self.layout = layout
        cloud = config.clusters.cloud
        self.kubeconfig = (cloud.kubeconfig if cloud and cloud.kubeconfig else None) or os.environ.get(
            "KUBECONFIG"
        )
        self.image = os.environ.get("AI_HOW_SERVER_IMAGE", "ai-how/model-server:latest")

    def _api(self) -> Any:
        if not self.kubeconfig or not os.path.exists(os.path.expanduser(self.kubeconfig)):
            raise DeployError(
                "the kserve backend needs a Kubernetes cluster, and no kubeconfig was found",
                fix="set clusters.cloud.kubeconfig or KUBECONFIG, or use mlops.serving.backend: local",
            )
        from kubernetes import client, config

        config.load_kube_config(config_file=os.path.expanduser(self.kubeconfig))
        return client.CustomObjectsApi()

    def deploy(self, request: DeployRequest) -> Deployment:
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        namespace = self.config.mlops.serving.namespace
        manifest = isvc.inference_service(
            self.config,
            request.model_name,
            request.version,
            request.storage_uri,
            run_id=request.run_id,
            tracking_uri=request.tracking_uri,
            manifest_sha256=request.manifest_sha256,
        )
        started = time.monotonic()
        try:
            try:
                api.create_namespaced_custom_object(
                    GROUP, "v1alpha1", namespace, "servingruntimes", isvc.serving_runtime(self.image)
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
            try:
                api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                api.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, request.model_name, manifest
                )
        except ApiException as exc:
            raise DeployError(f"Kubernetes refused the InferenceService: {exc.status} {exc.reason}") from None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, request.model_name)
            status = obj.get("status", {})
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
            )
            if ready and status.get("url"):
                return Deployment(
                    status["url"], request.model_name, request.version, time.monotonic() - started
                )
            time.sleep(5)
        raise DeployError(
            f"InferenceService {namespace}/{request.model_name} not Ready after {READY_TIMEOUT_S:.0f} s",
            fix=f"kubectl describe inferenceservice -n {namespace} {request.model_name}",
        )

    def undeploy(self, model_name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self._api().delete_namespaced_custom_object(
                GROUP, VERSION, self.config.mlops.serving.namespace, PLURAL, model_name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise DeployError(f"cannot delete InferenceService {model_name}: {exc.reason}") from None
        return True

    def endpoint(self, model_name: str) -> str | None:
        obj = self._api().get_namespaced_custom_object(
            GROUP, VERSION, self.config.mlops.serving.namespace, PLURAL, model_name
        )
        return obj.get("status", {}).get("url")  # type: ignore[no-any-return]
