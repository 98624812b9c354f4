"""Cluster health, node readiness and node labels/taints through the real `kubernetes` client.

The client talks HTTP to a stand-in API server (tests/kube/standin_api.py) serving recorded objects
in the API's shapes, because no Kubernetes API server can run here. A live test checks a real cluster
when KUBECONFIG points at one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ai_how.config.loader import load_config
from ai_how.config.models import Taint
from ai_how.errors import AiHowError
from ai_how.kube.health import (
    ClusterHealth,
    KubeUnreachableError,
    apply_node_labels_taints,
    cluster_health,
    wait_nodes_ready,
)
from ai_how.procs import free_port
from tests.conftest import EXAMPLE
from tests.kube.standin_api import standin_api

NODES = ["control-plane", "cpu-worker", "gpu-worker-1", "gpu-worker-2"]


def _one_line(exc: AiHowError) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    assert exc.fix
    return text


# --------------------------------------------------------------------------- cluster_health


def test_settled_cluster_is_healthy_with_gpus_per_node(tmp_path: Path) -> None:
    with standin_api("nodes.json", "pods.json") as api:
        health = cluster_health(api.kubeconfig(tmp_path / "kubeconfig"))

    assert health.healthy and health.problems() == []
    assert health.server == api.url and health.server_version == "v1.35.4"
    nodes = {n.name: n for n in health.nodes}
    assert list(nodes) == NODES
    assert all(n.ready and n.kubelet_version == "v1.35.4" for n in health.nodes)
    assert nodes["control-plane"].roles == ["control-plane"]
    assert nodes["control-plane"].taints == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert {n.name: n.gpus_allocatable for n in health.nodes} == {
        "control-plane": 0,
        "cpu-worker": 0,
        "gpu-worker-1": 1,
        "gpu-worker-2": 1,
    }
    assert health.gpus_allocatable == 2
    assert nodes["gpu-worker-1"].taints == ["nvidia.com/gpu=present:NoSchedule"]

    system = {p.name: p for p in health.system_pods}
    assert {"kube-apiserver-control-plane", "coredns-5c54f84c97-2kq8v", "nodelocaldns-n7v2c"} <= set(system)
    assert system["kube-controller-manager-control-plane"].restarts == 1  # restarted once, running now: fine
    operator = {p.name: p.status for p in health.gpu_operator_pods}
    assert operator["nvidia-device-plugin-daemonset-5p8xq"] == "Running"
    assert operator["nvidia-dcgm-exporter-d4g9v"] == "Running"
    assert operator["nvidia-cuda-validator-8cw2n"] == "Completed"  # a finished validator is not failing
    assert all(p.namespace == "gpu-operator" for p in health.gpu_operator_pods)

    data = json.loads(json.dumps(health.to_json()))
    assert data["healthy"] is True and data["gpus_allocatable"] == 2
    assert data["nodes"][2] == {
        "name": "gpu-worker-1",
        "ready": True,
        "ready_reason": "",
        "roles": [],
        "kubelet_version": "v1.35.4",
        "gpus_allocatable": 1,
        "gpus_capacity": 1,
        "taints": ["nvidia.com/gpu=present:NoSchedule"],
        "unschedulable": False,
    }


def test_notready_node_and_failing_pods_make_it_unhealthy(tmp_path: Path) -> None:
    with standin_api("nodes-notready.json", ["pods.json", "pods-failing.json"]) as api:
        health = cluster_health(api.kubeconfig(tmp_path / "kubeconfig"))

    assert not health.healthy
    nodes = {n.name: n for n in health.nodes}
    bad = nodes["gpu-worker-2"]
    assert not bad.ready and bad.gpus_allocatable == 0
    assert bad.ready_reason.startswith("NotReady: KubeletNotReady: ")
    assert "cni plugin not initialized" in bad.ready_reason
    assert health.gpus_allocatable == 1

    failing = {f"{p.namespace}/{p.name}": p for p in health.failing_pods}
    assert {k: (p.status, p.restarts) for k, p in failing.items()} == {
        "default/smollm-predictor-6d5f8c7b9-tq4wz": ("CrashLoopBackOff", 7),
        "gpu-operator/nvidia-operator-validator-zx9rt": ("Init:CrashLoopBackOff", 12),
        "mlops/mlflow-5b6c9d7f48-j8r2x": ("ImagePullBackOff", 0),
    }
    assert "failed to pull and unpack image" in failing["mlops/mlflow-5b6c9d7f48-j8r2x"].message
    # A pod in phase Running whose container crash-loops counts as failing.
    assert failing["default/smollm-predictor-6d5f8c7b9-tq4wz"].phase == "Running"
    assert failing["default/smollm-predictor-6d5f8c7b9-tq4wz"].ready_containers == 0
    assert any(p.name == "nvidia-operator-validator-zx9rt" and p.failing for p in health.gpu_operator_pods)

    problems = health.problems()
    assert problems[0].startswith("node gpu-worker-2 is not Ready: NotReady: KubeletNotReady")
    assert "pod default/smollm-predictor-6d5f8c7b9-tq4wz is CrashLoopBackOff (7 restarts)" in problems
    assert "pod mlops/mlflow-5b6c9d7f48-j8r2x is ImagePullBackOff" in problems
    assert json.loads(json.dumps(health.to_json()))["healthy"] is False


@pytest.mark.parametrize(
    ("nodes", "pods"),
    [("nodes-notready.json", ["pods.json"]), ("nodes.json", ["pods.json", "pods-failing.json"])],
    ids=["one-node-not-ready", "failing-pods-only"],
)
def test_either_a_notready_node_or_a_failing_pod_is_enough(
    tmp_path: Path, nodes: str, pods: list[str]
) -> None:
    with standin_api(nodes, pods) as api:
        health = cluster_health(api.kubeconfig(tmp_path / "kubeconfig"))
    assert not health.healthy and len(health.problems()) in (1, 3)


def test_a_cluster_without_nodes_is_not_healthy() -> None:
    assert not ClusterHealth(server="https://x:6443", server_version="v1.35.4").healthy


# --------------------------------------------------------------------------- one-line failures


def test_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    with standin_api() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", server=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(KubeUnreachableError) as caught:
        cluster_health(kubeconfig, timeout_s=2)
    text = _one_line(caught.value)
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:" in text
    assert "connection refused" in text and "HTTPConnection object" not in text


def test_refused_credentials_are_one_line(tmp_path: Path) -> None:
    with standin_api() as api, pytest.raises(AiHowError) as caught:
        cluster_health(api.kubeconfig(tmp_path / "kubeconfig", token="token-of-an-earlier-cluster"))
    text = _one_line(caught.value)
    assert "refused GET /version (HTTP 401 Unauthorized): Unauthorized" in text
    assert "ai-how cloud kubeconfig" in text


@pytest.mark.parametrize(
    ("content", "context", "expected"),
    [
        (None, None, "does not exist"),
        ("clusters: [\n", None, "is unusable: while parsing"),
        ("", None, "is unusable: Invalid kube-config"),
        ("standin", "no-such-context", "is unusable (context 'no-such-context'): "),
    ],
    ids=["missing", "bad-yaml", "empty", "unknown-context"],
)
def test_bad_kubeconfig_is_one_line(
    tmp_path: Path, content: str | None, context: str | None, expected: str
) -> None:
    path = tmp_path / "kubeconfig"
    with standin_api() as api:
        if content == "standin":
            api.kubeconfig(path)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(AiHowError) as caught:
            cluster_health(path, context=context)
    assert expected in _one_line(caught.value)
    assert not isinstance(caught.value, KubeUnreachableError)


def test_missing_kubernetes_client_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ModuleNotFoundError
    with pytest.raises(AiHowError) as caught:
        cluster_health(tmp_path / "kubeconfig")
    assert "pip install 'ai-how[infra]'" in _one_line(caught.value)


# --------------------------------------------------------------------------- wait_nodes_ready


def test_wait_returns_once_every_node_is_ready(tmp_path: Path) -> None:
    lines: list[str] = []
    # gpu-worker-2 is NotReady for two polls, then Ready.
    with standin_api(["nodes-notready.json", "nodes-notready.json", "nodes.json"]) as api:
        ready = wait_nodes_ready(api.kubeconfig(tmp_path / "kc"), NODES, 60, lines.append, poll_s=0.01)
        assert api.requests.count("GET /api/v1/nodes") == 3
    assert [n.name for n in ready] == NODES and all(n.ready for n in ready)
    assert len(lines) == 2  # the waiting line once (unchanged on the second poll), then done
    assert "3/4 nodes Ready; waiting for gpu-worker-2 (NotReady: KubeletNotReady" in lines[0]
    assert lines[-1] == "all 4 nodes Ready"


def test_wait_times_out_naming_the_nodes_and_why(tmp_path: Path) -> None:
    with standin_api("nodes-notready.json") as api, pytest.raises(AiHowError) as caught:
        wait_nodes_ready(api.kubeconfig(tmp_path / "kc"), [*NODES, "gpu-worker-3"], 0.2, poll_s=0.05)
    text = _one_line(caught.value)
    assert text.startswith("nodes not Ready after 0.2s: gpu-worker-2 (NotReady: KubeletNotReady:")
    assert "gpu-worker-3 (not registered)" in text and "journalctl -u kubelet" in text


def test_wait_retries_an_unreachable_server_until_the_deadline(tmp_path: Path) -> None:
    with standin_api() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kc", server=f"http://127.0.0.1:{free_port()}")
    lines: list[str] = []
    with pytest.raises(AiHowError) as caught:
        wait_nodes_ready(kubeconfig, NODES, 0.2, lines.append, poll_s=0.05, request_timeout_s=1)
    assert "API server: cannot reach the Kubernetes API server" in _one_line(caught.value)
    assert "0/4 nodes Ready" in lines[0]


def test_wait_fails_at_once_on_refused_credentials(tmp_path: Path) -> None:
    with standin_api() as api:
        with pytest.raises(AiHowError, match="HTTP 401"):
            wait_nodes_ready(api.kubeconfig(tmp_path / "kc", token="stale"), NODES, 600)
        assert api.requests == ["GET /api/v1/nodes"]


# --------------------------------------------------------------------------- labels and taints


def _from_config() -> dict[str, tuple[dict[str, str], list[Taint]]]:
    cloud = load_config(EXAMPLE).config.clusters.cloud
    assert cloud is not None
    workers = [*cloud.worker_nodes.cpu, *cloud.worker_nodes.gpu]
    return {w.name: (w.node_labels, w.node_taints) for w in workers}


def test_labels_and_taints_patch_only_the_difference_then_nothing(tmp_path: Path) -> None:
    with standin_api() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kc")
        sent = apply_node_labels_taints(kubeconfig, _from_config())
        assert sent == {
            # cpu-worker has workload-type=batch (config: general); mlops-services is already right.
            "cpu-worker": {"metadata": {"labels": {"workload-type": "general"}}},
            # gpu-worker-1 already has everything: no request. gpu-worker-2 has nothing yet.
            "gpu-worker-2": {
                "metadata": {
                    "labels": {
                        "workload-type": "inference",
                        "gpu-type": "tesla-t4",
                        "inference-ready": "true",
                    }
                },
                "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule", "value": "present"}]},
            },
        }
        assert [(p["node"], p["content_type"], p["body"]) for p in api.patches] == [
            ("cpu-worker", "application/merge-patch+json", sent["cpu-worker"]),
            ("gpu-worker-2", "application/merge-patch+json", sent["gpu-worker-2"]),
        ]

        assert apply_node_labels_taints(kubeconfig, _from_config()) == {}
        assert len(api.patches) == 2  # the second run sent nothing

        health = cluster_health(kubeconfig)
    worker2 = next(n for n in health.nodes if n.name == "gpu-worker-2")
    assert worker2.taints == ["nvidia.com/gpu=present:NoSchedule"]


def test_taint_value_change_keeps_other_taints(tmp_path: Path) -> None:
    with standin_api() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kc")
        sent = apply_node_labels_taints(
            kubeconfig,
            {
                "gpu-worker-1": ({}, [Taint(key="nvidia.com/gpu", value="shared", effect="NoSchedule")]),
                "control-plane": ({}, [Taint(key="ai-how/maintenance", effect="NoExecute")]),
            },
        )
    assert sent["gpu-worker-1"] == {
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "shared", "effect": "NoSchedule"}]}
    }
    # The control plane's own taint stays; the new one is added beside it (a merge patch replaces the list).
    assert sent["control-plane"]["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
        {"key": "ai-how/maintenance", "effect": "NoExecute"},
    ]
    assert "metadata" not in sent["control-plane"]


def test_labels_for_an_unknown_node_name_it(tmp_path: Path) -> None:
    with standin_api() as api:
        with pytest.raises(AiHowError) as caught:
            apply_node_labels_taints(api.kubeconfig(tmp_path / "kc"), {"gpu-worker-9": ({"a": "b"}, [])})
        assert api.patches == []
    assert "node(s) gpu-worker-9 are not in the cluster" in _one_line(caught.value)


# --------------------------------------------------------------------------- live


@pytest.mark.live
def test_live_cluster_health() -> None:
    """Runs against the cluster KUBECONFIG names (e.g. after `ai-how cloud deploy`); skipped without one."""
    value = os.environ.get("KUBECONFIG")
    if not value:
        pytest.skip("KUBECONFIG is not set: no Kubernetes cluster to check (no API server can run here)")
    path = Path(value.split(os.pathsep)[0]).expanduser()
    if not path.is_file():
        pytest.skip(f"KUBECONFIG names {path}, which does not exist")
    try:
        health = cluster_health(path)
    except KubeUnreachableError as exc:
        pytest.skip(f"KUBECONFIG points at no reachable cluster: {exc.message}")
    assert health.server_version.startswith("v1.")
    assert health.nodes and all(n.name and n.kubelet_version.startswith("v1.") for n in health.nodes)
    assert health.system_pods, "a cluster always runs pods in kube-system"
    assert all(n.gpus_allocatable <= n.gpus_capacity for n in health.nodes)
    json.dumps(health.to_json())
