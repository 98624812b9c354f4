"""Whole-config rules: networks, addresses, PCIe passthrough, capacity, SLURM, Kubernetes, MLOps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.checking import CheckResult, check_file
from ai_how.config.findings import Severity
from tests.conftest import EXAMPLE, LOCAL

Writer = Callable[[dict[str, Any]], Path]


def codes(result: CheckResult, severity: Severity = Severity.ERROR) -> list[str]:
    return [f.code for f in result.findings if f.severity is severity]


def gpu_worker(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return data["clusters"]["cloud"]["worker_nodes"]["gpu"][index]  # type: ignore[no-any-return]


def test_example_is_valid_and_reports_time_shared_gpu() -> None:
    result = check_file(EXAMPLE)
    assert result.valid, [f.message for f in result.findings]
    assert codes(result, Severity.INFO) == ["pcie.time_shared"]
    assert result.report is not None
    (share,) = result.report.plan.gpu_shares
    assert share.pci_address == "0000:65:00.0" and share.time_shared
    assert sorted(share.holders) == ["cloud/gpu-worker-1", "hpc/hpc-compute-01"]


def test_local_config_is_valid() -> None:
    result = check_file(LOCAL)
    assert result.valid and not result.findings


def test_three_errors_each_with_path_and_fix(example_data: dict[str, Any], write_config: Writer) -> None:
    """The acceptance case: overlapping subnets, a duplicated IP and a double-booked GPU."""
    example_data["clusters"]["cloud"]["network"]["subnet"] = "192.168.100.0/24"
    cloud = example_data["clusters"]["cloud"]
    cloud["control_plane"]["ip_address"] = "192.168.100.20"
    cloud["worker_nodes"]["cpu"][0]["ip"] = "192.168.100.21"
    gpu_worker(example_data, 1)["ip"] = "192.168.100.23"
    cloud["kubernetes_config"]["ingress"]["load_balancer_ip"] = "192.168.100.100"
    gpu_worker(example_data)["ip"] = "192.168.100.11"  # same as hpc-compute-01
    cloud["auto_start"] = True  # now both sides hold the A6000 at once
    result = check_file(write_config(example_data))
    assert not result.valid
    errors = [f for f in result.findings if f.severity is Severity.ERROR]
    assert sorted(f.code for f in errors) == ["network.ip_duplicate", "network.overlap", "pcie.conflict"]
    for finding in errors:
        assert finding.path and finding.line and finding.fix
    by_code = {f.code: f for f in errors}
    assert by_code["network.overlap"].where.startswith("clusters.cloud.network.subnet")
    assert "hpc-compute-01" in by_code["network.ip_duplicate"].message
    assert "0000:65:00.0" in by_code["pcie.conflict"].message
    assert "auto_start: false" in by_code["pcie.conflict"].fix


def test_gpu_shared_within_one_cluster_is_a_conflict(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    gpu_worker(example_data, 1)["pcie_passthrough"] = gpu_worker(example_data, 0)["pcie_passthrough"]
    result = check_file(write_config(example_data))
    assert "pcie.conflict" in codes(result)


def test_gpu_without_audio_sibling(example_data: dict[str, Any], write_config: Writer) -> None:
    devices = gpu_worker(example_data, 1)["pcie_passthrough"]["devices"]
    del devices[1]  # keep the T4, drop its audio function (same IOMMU group 4 in host inventory)
    result = check_file(write_config(example_data))
    (finding,) = [f for f in result.findings if f.code == "pcie.missing_sibling"]
    assert "0000:ca:00.1" in finding.fix and finding.where.startswith("clusters.cloud.worker_nodes.gpu[1]")


def test_sibling_known_from_config_alone(example_data: dict[str, Any], write_config: Writer) -> None:
    """Without a host inventory, a group's functions declared anywhere in the config still count."""
    del example_data["host"]["pcie_devices"]
    del gpu_worker(example_data, 0)["pcie_passthrough"]["devices"][1]
    result = check_file(write_config(example_data))
    assert "pcie.missing_sibling" in codes(result)


def test_iommu_group_mismatch(example_data: dict[str, Any], write_config: Writer) -> None:
    gpu_worker(example_data, 1)["pcie_passthrough"]["devices"][0]["iommu_group"] = 9
    result = check_file(write_config(example_data))
    assert "pcie.group_mismatch" in codes(result)


def test_kubernetes_cidrs_must_not_overlap_node_subnets(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    net = example_data["clusters"]["cloud"]["kubernetes_config"]["networking"]
    net["pod_cidr"] = "192.168.0.0/16"
    net["service_cidr"] = "10.244.128.0/20"
    result = check_file(write_config(example_data))
    overlaps = [f for f in result.findings if f.code == "network.overlap"]
    paths = {f.where.split(" ")[0] for f in overlaps}
    assert "clusters.cloud.kubernetes_config.networking.pod_cidr" in paths
    assert len(overlaps) == 2  # pod CIDR vs both node subnets; service CIDR is clear of them


def test_address_outside_subnet_and_reserved(example_data: dict[str, Any], write_config: Writer) -> None:
    example_data["clusters"]["hpc"]["controller"]["ip_address"] = "10.0.0.5"
    example_data["clusters"]["hpc"]["compute_nodes"][0]["ip_address"] = "192.168.100.1"
    result = check_file(write_config(example_data))
    assert {"network.ip_outside_subnet", "network.ip_gateway"} <= set(codes(result))


def test_capacity_is_an_error_unless_forced(example_data: dict[str, Any], write_config: Writer) -> None:
    example_data["host"]["cpu_cores"] = 16
    path = write_config(example_data)
    strict = check_file(path)
    assert "capacity.exceeded" in codes(strict)
    assert "36 CPU cores" in next(f.message for f in strict.findings if f.code == "capacity.exceeded")
    forced = check_file(path, force=True)
    assert forced.valid and "capacity.exceeded" in codes(forced, Severity.WARNING)


def test_capacity_counts_clusters_running_together(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    example_data["host"]["cpu_cores"] = 40  # enough for either side alone, not both
    assert check_file(write_config(example_data)).valid
    example_data["clusters"]["cloud"]["auto_start"] = True
    # both sides at once also double-book the A6000, so expect both errors
    assert {"capacity.exceeded", "pcie.conflict"} <= set(codes(check_file(write_config(example_data))))


def test_capacity_checked_against_this_machine_without_host(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    del example_data["host"]
    result = check_file(write_config(example_data))
    assert result.report is not None and result.report.plan.host.source == "detected"
    if result.report.plan.host.cpu_cores < 36:
        assert "capacity.exceeded" in codes(result)


def test_slurm_partition_rules(example_data: dict[str, Any], write_config: Writer) -> None:
    slurm = example_data["clusters"]["hpc"]["slurm"]
    slurm["partitions"].append({"name": "gpu", "nodes": ["nope"], "default": True})
    result = check_file(write_config(example_data))
    assert {"slurm.default_partitions", "slurm.duplicate_partition", "slurm.unknown_node"} <= set(
        codes(result)
    )


def test_mlops_rules(write_config: Writer) -> None:
    data = {
        "metadata": {"name": "x"},
        "mlops": {
            "mlflow": {"port": 8080, "backend_store": {"type": "postgresql"}},
            "serving": {"port": 8080},
            "object_store": {"serve_local": True},
        },
    }
    assert {"mlops.port_clash", "mlops.postgres_disabled", "mlops.serve_local"} <= set(
        codes(check_file(write_config(data)))
    )


def test_kserve_needs_an_object_store_and_a_scaler_its_mode_supports(write_config: Writer) -> None:
    serving = {"backend": "kserve", "deployment_mode": "Knative", "autoscaling": {"autoscaler": "keda"}}
    data = {"metadata": {"name": "x"}, "mlops": {"serving": serving}}
    result = check_file(write_config(data))
    found = {f.code: f for f in result.findings}
    assert found["mlops.kserve_file_store"].path[:3] == ("mlops", "object_store", "backend")
    assert "backend: s3" in found["mlops.kserve_file_store"].fix
    assert found["mlops.kserve_keda_knative"].path[-1] == "autoscaler"
    serving |= {"deployment_mode": "Standard"}
    data["mlops"]["object_store"] = {"backend": "s3", "endpoint": "http://127.0.0.1:8333"}
    assert not {"mlops.kserve_file_store", "mlops.kserve_keda_knative"} & set(
        codes(check_file(write_config(data)))
    )


@pytest.mark.parametrize("field", ["min_replicas"])
def test_autoscaling_order(write_config: Writer, field: str) -> None:
    data = {"metadata": {"name": "x"}, "mlops": {"serving": {"autoscaling": {field: 5, "max_replicas": 2}}}}
    result = check_file(write_config(data))
    assert not result.valid
    assert "min_replicas <= max_replicas" in result.findings[0].fix


def test_functions_of_one_iommu_group_on_two_vms_conflict(
    example_data: dict[str, Any], write_config: Writer
) -> None:
    """The A6000 on the HPC node and only its audio function on a cloud worker: one group, two VMs."""
    example_data["clusters"]["cloud"]["auto_start"] = True
    example_data["host"]["cpu_cores"] = 128
    worker = gpu_worker(example_data)
    worker["pcie_passthrough"]["devices"] = worker["pcie_passthrough"]["devices"][1:]
    result = check_file(write_config(example_data))
    conflict = next(f for f in result.findings if f.code == "pcie.conflict")
    assert "IOMMU group 3" in conflict.message and "0000:65:00.1" in conflict.message
    assert "pcie.partial_group" in codes(result)


def test_embedded_monitoring_ports_must_not_clash(write_config: Writer) -> None:
    monitoring = {
        "prometheus": {"enabled": True, "port": 9090},
        "alertmanager": {"port": 9100},  # node exporter's default port
    }
    result = check_file(write_config({"metadata": {"name": "x"}, "monitoring": monitoring}))
    clash = next(f for f in result.findings if f.code == "mlops.port_clash")
    assert "port 9100" in clash.message
    monitoring["alertmanager"] = {"port": 9093}
    assert "mlops.port_clash" not in codes(
        check_file(write_config({"metadata": {"name": "x"}, "monitoring": monitoring}))
    )
