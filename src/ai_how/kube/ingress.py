"""The ingress controller ai-how installs itself (Kubespray v2.31 dropped ``ingress_nginx_enabled``)."""

from __future__ import annotations

from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.kube.helm import HelmChart

# ingress-nginx's own chart, pinned. Upstream retired ingress-nginx in 2026 (no further releases);
# it keeps working, and `provider: traefik` is the way forward once ai-how ships it.
INGRESS_NGINX = HelmChart(
    release="ingress-nginx",
    chart="ingress-nginx",
    version="4.13.3",
    repo="https://kubernetes.github.io/ingress-nginx",
    namespace="ingress-nginx",
)


def ingress_chart(config: ClusterConfig) -> HelmChart | None:
    """The chart for ``kubernetes_config.ingress`` (None when disabled)."""
    cloud = config.clusters.cloud
    if cloud is None or not cloud.kubernetes_config.ingress.enabled:
        return None
    if cloud.kubernetes_config.ingress.provider != "nginx":
        raise AiHowError(
            "clusters.cloud.kubernetes_config.ingress.provider: only nginx is installed by ai-how so far",
            fix="use provider: nginx, or enabled: false and install your own ingress controller",
        )
    return INGRESS_NGINX


def ingress_values(config: ClusterConfig) -> dict[str, Any]:
    """Replicas from the config; a LoadBalancer service on the configured IP when one is set (with a
    load-balancer implementation such as MetalLB), else NodePort on every node."""
    cloud = config.clusters.cloud
    assert cloud is not None
    ingress = cloud.kubernetes_config.ingress
    service: dict[str, Any] = {"type": "NodePort"}
    if ingress.load_balancer_ip is not None:
        service = {"type": "LoadBalancer", "loadBalancerIP": str(ingress.load_balancer_ip)}
    return {
        "controller": {
            "replicaCount": ingress.replicas,
            "ingressClassResource": {"default": True},
            "service": service,
            "metrics": {"enabled": True},
        }
    }
