"""KServe v0.20 from its own charts (CRDs, then the controller) in ``Standard`` mode: Deployments and
Ingresses, no Knative or Istio. Then ai-how's ServingRuntime and the predictors' ServiceAccount in the
models namespace (built by :mod:`ai_how.kube.kserve`)."""

from __future__ import annotations

from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.kube.helm import HelmChart
from ai_how.kube.kserve import service_account, serving_runtime
from ai_how.kube.stack.common import node_selector, stack

KSERVE_VERSION = "v0.20.0"
KSERVE_NAMESPACE = "kserve"
KSERVE_CRD = HelmChart(
    release="kserve-crd",
    chart="oci://ghcr.io/kserve/charts/kserve-crd",
    version=KSERVE_VERSION,
    repo="",
    namespace=KSERVE_NAMESPACE,
)
KSERVE = HelmChart(
    release="kserve",
    chart="oci://ghcr.io/kserve/charts/kserve-resources",
    version=KSERVE_VERSION,
    repo="",
    namespace=KSERVE_NAMESPACE,
)
CONTROLLER_DEPLOYMENT = "kserve-controller-manager"


def kserve_values(config: ClusterConfig) -> dict[str, Any]:
    """kserve-resources values: Standard mode, Ingresses of the nginx class on the config's domain,
    Prometheus scraping annotations on model pods."""
    controller: dict[str, Any] = {
        "deploymentMode": "Standard",
        "gateway": {
            "domain": stack(config).ingress_domain,
            "ingressGateway": {"className": "nginx"},
        },
    }
    if selector := node_selector(config, "kserve"):
        controller["nodeSelector"] = selector
    return {
        "kserve": {
            "controller": controller,
            "metricsaggregator": {"enablePrometheusScraping": "true"},
        }
    }


def kserve_objects(config: ClusterConfig) -> list[dict[str, Any]]:
    """ai-how's ServingRuntime and the ServiceAccount listing the S3 Secret (models namespace)."""
    return [service_account(config), serving_runtime(config)]
