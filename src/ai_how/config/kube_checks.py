"""Whole-config checks of the cloud cluster's Kubernetes settings, before any Kubespray playbook runs.

Versions the pinned Kubespray release can install (from ai-how's release data), the pod subnet vs the
per-node prefix, node label and taint syntax, and an odd etcd membership.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ai_how.config.envexpand import YamlPath
from ai_how.config.findings import Finding, error
from ai_how.config.models import CloudCluster
from ai_how.kube.kubespray.releases import KubesprayRelease, known_releases, release, resolve_version

BASE: YamlPath = ("clusters", "cloud", "kubernetes_config")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label/taint key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"its prefix '{prefix}' is not a DNS subdomain (lower-case, dots, at most 253 characters)"
    if not _NAME.match(name):
        return "its name must be 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def label_value_problem(value: str) -> str | None:
    if value and not _NAME.match(value):
        return "values are empty or 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _versions(cloud: CloudCluster, known: KubesprayRelease) -> Iterator[Finding]:
    k8s = cloud.kubernetes_config
    wanted = [
        ("Kubernetes", "kubernetes", k8s.version, ("version",)),
        ("Calico", "calico", k8s.networking.cni_version if k8s.networking.cni == "calico" else None,
         ("networking", "cni_version")),
        ("containerd", "containerd", k8s.runtime_version if k8s.runtime == "containerd" else None,
         ("runtime_version",)),
    ]  # fmt: skip
    for what, component, version, path in wanted:
        if version is None:
            continue
        available: tuple[str, ...] = getattr(known, component)
        if resolve_version(version, available, known.defaults[component]) is None:
            yield error(
                (*BASE, *path),
                f"Kubespray {known.version} cannot install {what} {version}; it installs {known.span(component)}",
                f'use one of those, e.g. "{known.defaults[component]}" (its default)',
                f"k8s.{component}_version",
            )


def _node_prefix(cloud: CloudCluster) -> Iterator[Finding]:
    k8s = cloud.kubernetes_config
    pods = k8s.networking.pod_cidr
    if k8s.node_prefix <= pods.prefixlen:
        yield error(
            (*BASE, "node_prefix"),
            f"node_prefix /{k8s.node_prefix} must be longer than the pod CIDR {pods} (/{pods.prefixlen}): "
            "each node takes a slice of the pod CIDR",
            f"use a node_prefix above {pods.prefixlen} (e.g. 24), or a larger pod_cidr",
            "k8s.node_prefix",
        )
        return
    nodes = 1 + len(cloud.worker_nodes.cpu) + len(cloud.worker_nodes.gpu)
    if 2 ** (k8s.node_prefix - pods.prefixlen) < nodes:
        yield error(
            (*BASE, "node_prefix"),
            f"the pod CIDR {pods} holds {2 ** (k8s.node_prefix - pods.prefixlen)} /{k8s.node_prefix} node "
            f"slices, fewer than the {nodes} nodes",
            "use a larger pod_cidr or a longer node_prefix",
            "k8s.node_prefix_small",
        )


def _labels_and_taints(cloud: CloudCluster) -> Iterator[Finding]:
    for kind in ("cpu", "gpu"):
        for index, worker in enumerate(getattr(cloud.worker_nodes, kind)):
            path: YamlPath = ("clusters", "cloud", "worker_nodes", kind, index)
            for key, value in worker.node_labels.items():
                problem = label_key_problem(key) or label_value_problem(value)
                if problem:
                    yield error(
                        (*path, "node_labels", key),
                        f"node label '{key}: {value}' is not valid: {problem}",
                        "fix the label (see Kubernetes' label syntax)",
                        "k8s.label_syntax",
                    )
            for t_index, taint in enumerate(worker.node_taints):
                problem = label_key_problem(taint.key) or label_value_problem(taint.value)
                if problem:
                    yield error(
                        (*path, "node_taints", t_index),
                        f"taint '{taint.key}={taint.value}' is not valid: {problem}",
                        "fix the taint's key or value (same syntax as labels)",
                        "k8s.taint_syntax",
                    )


def _etcd(cloud: CloudCluster, vm_names: set[str]) -> Iterator[Finding]:
    members = cloud.kubernetes_config.etcd_nodes
    if not members:
        return
    path = (*BASE, "etcd_nodes")
    unknown = [m for m in members if m not in vm_names]
    if unknown:
        yield error(
            path, f"etcd_nodes names unknown VMs: {', '.join(unknown)}", "name cloud VMs", "k8s.etcd_unknown"
        )
    if len(set(members)) % 2 == 0:
        yield error(
            path,
            f"etcd has {len(set(members))} members: an even number tolerates no more failures than one fewer "
            "and risks a split vote",
            "use an odd number of etcd members (1, 3 or 5)",
            "k8s.etcd_even",
        )


def check_kubespray(cloud: CloudCluster, vm_names: set[str]) -> Iterator[Finding]:
    spray = cloud.kubernetes_config.kubespray
    known = release(spray.version)
    if known is None:
        if spray.commit is None:
            yield error(
                (*BASE, "kubespray", "version"),
                f"ai-how does not know Kubespray {spray.version}",
                f"use {', '.join(sorted(known_releases()))}, or set kubespray.commit to the tag's commit "
                "(versions are then not checked)",
                "k8s.kubespray_unknown",
            )
    else:
        if spray.commit is not None and spray.commit != known.commit:
            yield error(
                (*BASE, "kubespray", "commit"),
                f"Kubespray {spray.version} is commit {known.commit}, not {spray.commit}",
                "remove kubespray.commit (ai-how pins the right one) or fix the version",
                "k8s.kubespray_commit",
            )
        yield from _versions(cloud, known)
    yield from _node_prefix(cloud)
    yield from _labels_and_taints(cloud)
    yield from _etcd(cloud, vm_names)
