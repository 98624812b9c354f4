"""Whole-config (semantic) validation: rules that need more than one field to decide.

Each rule is a small function ``(ValidationContext) -> Iterable[Finding]`` listed in
``RULES``; :func:`validate` runs them all, so every problem is reported at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ai_how.config.envexpand import YamlPath
from ai_how.config.findings import Finding, Severity, error, info, warning
from ai_how.config.host import HostResources, host_resources
from ai_how.config.kube_checks import check_kubespray
from ai_how.config.loader import LoadedConfig
from ai_how.config.models import ClusterConfig, PCIeDevice
from ai_how.config.plan import ResourcePlan, build_plan, device_label
from ai_how.config.topology import VMRecord, iter_vms, run_together


@dataclass
class ValidationContext:
    config: ClusterConfig
    host: HostResources
    plan: ResourcePlan
    force: bool
    vms: list[VMRecord] = field(default_factory=list)


@dataclass
class ValidationReport:
    loaded: LoadedConfig
    plan: ResourcePlan
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.INFO]

    @property
    def valid(self) -> bool:
        return not self.errors


Rule = Callable[[ValidationContext], Iterable[Finding]]


# --------------------------------------------------------------------------- networks


def _networks(ctx: ValidationContext) -> list[tuple[str, IPv4Network, YamlPath]]:
    nets: list[tuple[str, IPv4Network, YamlPath]] = []
    hpc, cloud = ctx.config.clusters.hpc, ctx.config.clusters.cloud
    if hpc is not None and hpc.network is not None:
        nets.append(("HPC network", hpc.network.subnet, ("clusters", "hpc", "network", "subnet")))
    if cloud is not None:
        nets.append(("cloud network", cloud.network.subnet, ("clusters", "cloud", "network", "subnet")))
        k8s = ("clusters", "cloud", "kubernetes_config", "networking")
        net = cloud.kubernetes_config.networking
        nets.append(("pod CIDR", net.pod_cidr, (*k8s, "pod_cidr")))
        nets.append(("service CIDR", net.service_cidr, (*k8s, "service_cidr")))
    return nets


def check_network_overlaps(ctx: ValidationContext) -> Iterator[Finding]:
    nets = _networks(ctx)
    for i, (name_a, net_a, path_a) in enumerate(nets):
        for name_b, net_b, path_b in nets[i + 1 :]:
            if net_a.overlaps(net_b):
                yield error(
                    path_b,
                    f"{name_b} {net_b} overlaps the {name_a} {net_a} ({'.'.join(map(str, path_a))})",
                    f"give the {name_b} a range that does not overlap {net_a}, e.g. {_suggest_free(net_b, nets)}",
                    "network.overlap",
                    related=[path_a],
                )
    hpc, cloud = ctx.config.clusters.hpc, ctx.config.clusters.cloud
    if (
        hpc is not None
        and hpc.network is not None
        and cloud is not None
        and hpc.network.bridge == cloud.network.bridge
    ):
        yield error(
            ("clusters", "cloud", "network", "bridge"),
            f"bridge '{cloud.network.bridge}' is also the HPC cluster's bridge",
            "give each cluster its own bridge, e.g. virbr100 and virbr200",
            "network.bridge_shared",
            related=[("clusters", "hpc", "network", "bridge")],
        )


def _suggest_free(net: IPv4Network, taken: list[tuple[str, IPv4Network, YamlPath]]) -> str:
    """A same-sized private range that overlaps nothing in ``taken``."""
    pools = [IPv4Network("192.168.0.0/16"), IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12")]
    used = [n for _, n, _ in taken if n != net]
    for pool in pools:
        if net.prefixlen < pool.prefixlen:
            continue
        for candidate in pool.subnets(new_prefix=net.prefixlen):
            if not any(candidate.overlaps(u) for u in used):
                return str(candidate)
    return "a free private range"


def check_node_addresses(ctx: ValidationContext) -> Iterator[Finding]:
    seen: dict[IPv4Address, VMRecord] = {}
    for vm in ctx.vms:
        ip = vm.spec.ip_address
        path = (*vm.path, "ip_address")
        if vm.subnet is not None:
            if ip not in vm.subnet:
                yield error(
                    path,
                    f"{vm.name}: {ip} is outside the {vm.cluster} subnet {vm.subnet}",
                    f"pick an address inside {vm.subnet}, e.g. {_free_host(vm.subnet, seen)}",
                    "network.ip_outside_subnet",
                )
            elif ip in (vm.subnet.network_address, vm.subnet.broadcast_address):
                yield error(
                    path,
                    f"{vm.name}: {ip} is the {'network' if ip == vm.subnet.network_address else 'broadcast'} "
                    f"address of {vm.subnet}",
                    f"pick a host address, e.g. {_free_host(vm.subnet, seen)}",
                    "network.ip_reserved",
                )
            elif ip == vm.subnet.network_address + 1:
                yield error(
                    path,
                    f"{vm.name}: {ip} is the bridge (gateway) address of {vm.subnet}",
                    f"start VM addresses at .10, e.g. {_free_host(vm.subnet, seen)}",
                    "network.ip_gateway",
                )
        if ip in seen:
            other = seen[ip]
            yield error(
                path,
                f"{vm.name}: {ip} is already used by {other.cluster}/{other.name}",
                f"give {vm.name} its own address"
                + (f", e.g. {_free_host(vm.subnet, seen)}" if vm.subnet is not None else ""),
                "network.ip_duplicate",
                related=[(*other.path, "ip_address")],
            )
        else:
            seen[ip] = vm
    cloud = ctx.config.clusters.cloud
    if cloud is not None and cloud.kubernetes_config.ingress.load_balancer_ip is not None:
        lb = cloud.kubernetes_config.ingress.load_balancer_ip
        path = ("clusters", "cloud", "kubernetes_config", "ingress", "load_balancer_ip")
        if lb not in cloud.network.subnet:
            yield error(
                path,
                f"ingress IP {lb} is outside the cloud subnet {cloud.network.subnet}",
                f"pick an unused address inside {cloud.network.subnet}",
                "network.lb_outside_subnet",
            )
        elif lb in seen:
            yield error(
                path,
                f"ingress IP {lb} is already a node address ({seen[lb].name})",
                "pick an address no VM uses",
                "network.lb_duplicate",
                related=[(*seen[lb].path, "ip_address")],
            )


def _free_host(subnet: IPv4Network, used: dict[IPv4Address, VMRecord]) -> str:
    for offset, host in enumerate(subnet.hosts()):
        if offset >= 9 and host not in used:  # leave .1-.9 to the bridge and services
            return str(host)
    return "a free address"


# --------------------------------------------------------------------------- PCIe passthrough


def check_pcie_passthrough(ctx: ValidationContext) -> Iterator[Finding]:
    # Every function the config or the host inventory knows, by IOMMU group.
    by_group: dict[int, dict[str, PCIeDevice]] = defaultdict(dict)
    declared_group: dict[str, tuple[int, YamlPath]] = {}
    users: dict[str, list[tuple[VMRecord, YamlPath]]] = defaultdict(list)
    for device in ctx.host.pcie_devices:
        by_group[device.iommu_group][device.pci_address] = device
        declared_group.setdefault(device.pci_address, (device.iommu_group, ("host", "pcie_devices")))
    for vm in ctx.vms:
        for index, device in enumerate(vm.spec.passthrough_devices):
            path = (*vm.path, "pcie_passthrough", "devices", index)
            known = declared_group.get(device.pci_address)
            if known is not None and known[0] != device.iommu_group:
                yield error(
                    (*path, "iommu_group"),
                    f"{device.pci_address} is in IOMMU group {known[0]} elsewhere, {device.iommu_group} here",
                    f"use iommu_group: {known[0]} (see /sys/kernel/iommu_groups)",
                    "pcie.group_mismatch",
                    related=[known[1]],
                )
                continue
            declared_group.setdefault(device.pci_address, (device.iommu_group, path))
            by_group[device.iommu_group].setdefault(device.pci_address, device)
            users[device.pci_address].append((vm, path))
        seen_here: set[str] = set()
        for index, device in enumerate(vm.spec.passthrough_devices):
            if device.pci_address in seen_here:
                yield error(
                    (*vm.path, "pcie_passthrough", "devices", index),
                    f"{vm.name} lists {device.pci_address} twice",
                    "remove the duplicate entry",
                    "pcie.duplicate",
                )
            seen_here.add(device.pci_address)

    # A device (or any function of its IOMMU group) held by two VMs that can run at the same time.
    group_users: dict[int, dict[YamlPath, list[tuple[VMRecord, YamlPath, str]]]] = defaultdict(dict)
    for address, held in users.items():
        for vm, path in held:
            group_users[declared_group[address][0]].setdefault(vm.path, []).append((vm, path, address))
    for group, per_vm in group_users.items():
        entries = list(per_vm.values())
        for i, mine in enumerate(entries):
            for theirs in entries[i + 1 :]:
                yield _shared_device_finding(group, mine, theirs)

    # A VM must take every function of an IOMMU group it takes any function of.
    for vm in ctx.vms:
        taken = {d.pci_address for d in vm.spec.passthrough_devices}
        for index, device in enumerate(vm.spec.passthrough_devices):
            siblings = [d for a, d in by_group[device.iommu_group].items() if a not in taken]
            if not siblings:
                continue
            path = (*vm.path, "pcie_passthrough", "devices", index)
            audio = [d for d in siblings if d.device_type == "audio"]
            if device.device_type == "gpu" and audio:
                yield error(
                    path,
                    f"{vm.name}: GPU {device_label(device)} is passed without its audio function "
                    f"{audio[0].pci_address} (same IOMMU group {device.iommu_group})",
                    f"add {audio[0].pci_address} (device_type: audio, iommu_group: {device.iommu_group}) "
                    "to the same VM's devices",
                    "pcie.missing_sibling",
                )
            else:
                names = ", ".join(d.pci_address for d in siblings)
                yield error(
                    path,
                    f"{vm.name}: {device.pci_address} is passed without the rest of IOMMU group "
                    f"{device.iommu_group} ({names})",
                    "pass every function of the group to the same VM",
                    "pcie.partial_group",
                )


def _shared_device_finding(
    group: int, mine: list[tuple[VMRecord, YamlPath, str]], theirs: list[tuple[VMRecord, YamlPath, str]]
) -> Finding:
    """Two VMs hold functions of one IOMMU group: a conflict, or a note when they never run together."""
    first_vm, first_path, _ = mine[0]
    vm_b, path_b, _ = theirs[0]
    addresses = sorted({address for _, _, address in mine + theirs})
    what = f"{', '.join(addresses)} (IOMMU group {group})"
    if run_together(first_vm, vm_b):
        return error(
            path_b,
            f"{what} is given to both {first_vm.cluster}/{first_vm.name} and {vm_b.cluster}/{vm_b.name}, "
            "which can run at the same time",
            "give the device to one VM only, or set auto_start: false on one cluster to time-share it",
            "pcie.conflict",
            related=[first_path],
        )
    return info(
        path_b,
        f"{what} is time-shared between {first_vm.cluster}/{first_vm.name} and {vm_b.cluster}/{vm_b.name} "
        "(one cluster has auto_start: false, so they never run together)",
        "pcie.time_shared",
        related=[first_path],
    )


# --------------------------------------------------------------------------- capacity


def check_capacity(ctx: ValidationContext) -> Iterator[Finding]:
    host = ctx.host
    origin = "host: in the config" if host.source == "config" else "this machine"
    make = warning if ctx.force else error
    suffix = " (allowed by --force)" if ctx.force else ""
    for usage in ctx.plan.scenarios:
        who = " + ".join(usage.clusters)
        for label, need, have, unit in (
            ("CPU cores", usage.cpu_cores, host.cpu_cores, ""),
            ("memory", usage.memory_gb, host.memory_gb, " GB"),
            ("disk", usage.disk_gb, host.disk_gb, " GB"),
        ):
            if need > have:
                yield make(
                    ("clusters", usage.clusters[0]) if len(usage.clusters) == 1 else ("clusters",),
                    f"{who} needs {need}{unit} {label} at once but {origin} has {have}{unit}{suffix}",
                    "shrink the VMs, set auto_start: false on one cluster to run them in turn, "
                    "describe the real workstation under host:, or pass --force",
                    "capacity.exceeded",
                )


# --------------------------------------------------------------------------- names, SLURM, Kubernetes, MLOps


def check_names(ctx: ValidationContext) -> Iterator[Finding]:
    seen: dict[str, VMRecord] = {}
    for vm in ctx.vms:
        if vm.name in seen:
            yield error(
                (*vm.path, "name"),
                f"VM name '{vm.name}' is used twice",
                "give every VM a unique name",
                "names.duplicate",
                related=[(*seen[vm.name].path, "name")],
            )
        seen.setdefault(vm.name, vm)


def check_slurm(ctx: ValidationContext) -> Iterator[Finding]:
    hpc = ctx.config.clusters.hpc
    if hpc is None:
        return
    base = ("clusters", "hpc", "slurm", "partitions")
    compute = {vm.name: vm for vm in ctx.vms if vm.role == "slurm-compute"}
    defaults = [p for p in hpc.slurm.partitions if p.default]
    if len(defaults) > 1:
        yield error(
            base,
            f"{len(defaults)} partitions are marked default",
            "mark exactly one partition default: true",
            "slurm.default_partitions",
        )
    names: set[str] = set()
    for index, partition in enumerate(hpc.slurm.partitions):
        if partition.name in names:
            yield error(
                (*base, index, "name"),
                f"partition '{partition.name}' is defined twice",
                "give each partition a unique name",
                "slurm.duplicate_partition",
            )
        names.add(partition.name)
        for node in partition.nodes:
            if compute and node not in compute:
                yield error(
                    (*base, index, "nodes"),
                    f"partition '{partition.name}' names unknown node '{node}'",
                    f"use compute node names: {', '.join(compute)}",
                    "slurm.unknown_node",
                )
    if hpc.scheduler == "slurm" and not compute and hpc.slurm.login is None and hpc.controller is not None:
        yield warning(
            ("clusters", "hpc", "compute_nodes"),
            "scheduler is slurm but no compute nodes are defined",
            "add compute_nodes, or set slurm.login to an existing cluster's login node",
            "slurm.no_compute",
        )
    if hpc.slurm.container_runtime == "apptainer" and not hpc.slurm.container_image:
        yield error(
            ("clusters", "hpc", "slurm", "container_image"),
            "container_runtime is apptainer but no image is set",
            "set container_image to a .sif path on the shared storage",
            "slurm.no_image",
        )


def check_kubernetes(ctx: ValidationContext) -> Iterator[Finding]:
    cloud = ctx.config.clusters.cloud
    if cloud is None:
        return
    k8s = cloud.kubernetes_config
    base = ("clusters", "cloud", "kubernetes_config")
    classes = [c.name for c in k8s.storage.classes]
    if k8s.storage.default_class not in classes:
        yield error(
            (*base, "storage", "default_class"),
            f"default storage class '{k8s.storage.default_class}' is not among the classes",
            f"use one of: {', '.join(classes) or '(define a class first)'}",
            "k8s.default_class",
        )
    gpu_workers = [vm for vm in ctx.vms if vm.role == "k8s-gpu-worker"]
    for vm in gpu_workers:
        if not vm.spec.gpus:
            yield warning(
                vm.path,
                f"{vm.name} is a GPU worker without a GPU in pcie_passthrough",
                "enable pcie_passthrough with a device_type: gpu device",
                "k8s.gpu_worker_without_gpu",
            )
    for vm in ctx.vms:
        if vm.role == "k8s-cpu-worker" and vm.spec.gpus:
            yield warning(
                vm.path,
                f"{vm.name} is a CPU worker but has a GPU passed through",
                "list it under worker_nodes.gpu",
                "k8s.cpu_worker_with_gpu",
            )
    if k8s.gpu_operator.enabled and not gpu_workers:
        yield warning(
            (*base, "gpu_operator", "enabled"),
            "the GPU operator is enabled but there are no GPU workers",
            "add a GPU worker or disable gpu_operator",
            "k8s.gpu_operator_unused",
        )


def check_kubespray_settings(ctx: ValidationContext) -> Iterator[Finding]:
    cloud = ctx.config.clusters.cloud
    if cloud is not None:
        yield from check_kubespray(cloud, {vm.name for vm in ctx.vms if vm.cluster == "cloud"})


def check_mlops(ctx: ValidationContext) -> Iterator[Finding]:
    mlops = ctx.config.mlops
    if mlops.mlflow.backend_store.type == "postgresql" and not mlops.postgresql.enabled:
        yield error(
            ("mlops", "mlflow", "backend_store", "type"),
            "MLflow uses PostgreSQL but mlops.postgresql is disabled",
            "set mlops.postgresql.enabled: true (and its host/port/database)",
            "mlops.postgres_disabled",
        )
    store = mlops.object_store
    if store.backend == "file" and store.endpoint is not None:
        yield warning(
            ("mlops", "object_store", "endpoint"),
            "endpoint is ignored by the file backend",
            "remove it, or set backend: s3",
            "mlops.endpoint_ignored",
        )
    if store.serve_local and (store.backend != "s3" or store.endpoint is None):
        yield error(
            ("mlops", "object_store", "serve_local"),
            "serve_local needs backend: s3 and a local endpoint",
            "set backend: s3 and endpoint: http://127.0.0.1:9000",
            "mlops.serve_local",
        )
    if mlops.serving.backend == "kserve" and ctx.config.clusters.cloud is None:
        yield info(
            ("mlops", "serving", "backend"),
            "serving backend is kserve with no cloud cluster defined: $KUBECONFIG's cluster is used",
            "mlops.kserve_external",
        )
    yield from _check_kserve(ctx)
    # Local services must not collide on one port.
    ports: dict[tuple[str, int], YamlPath] = {}
    services: list[tuple[bool, str, int, YamlPath]] = [
        (
            mlops.mlflow.enabled and mlops.mlflow.tracking_uri is None,
            mlops.mlflow.host,
            mlops.mlflow.port,
            ("mlops", "mlflow", "port"),
        ),
        (
            mlops.serving.backend == "local",
            mlops.serving.host,
            mlops.serving.port,
            ("mlops", "serving", "port"),
        ),
        (
            ctx.config.monitoring.prometheus.enabled,
            ctx.config.monitoring.prometheus.host,
            ctx.config.monitoring.prometheus.port,
            ("monitoring", "prometheus", "port"),
        ),
        *_monitoring_ports(ctx),
    ]
    for enabled, host, port, path in services:
        if not enabled:
            continue
        if (host, port) in ports:
            yield error(
                path,
                f"port {port} on {host} is also used by {'.'.join(map(str, ports[(host, port)]))}",
                "give each local service its own port",
                "mlops.port_clash",
                related=[ports[(host, port)]],
            )
        ports.setdefault((host, port), path)


def _monitoring_ports(ctx: ValidationContext) -> list[tuple[bool, str, int, YamlPath]]:
    """The embedded monitoring services' ports (they run only with Prometheus enabled)."""
    monitoring = ctx.config.monitoring
    on = monitoring.prometheus.enabled
    exporters = monitoring.exporters
    hpc = ctx.config.clusters.hpc
    return [
        (
            on and monitoring.alertmanager.enabled,
            monitoring.alertmanager.host,
            monitoring.alertmanager.port,
            ("monitoring", "alertmanager", "port"),
        ),
        (
            on and exporters.node_exporter,
            "127.0.0.1",
            exporters.node_exporter_port,
            ("monitoring", "exporters", "node_exporter_port"),
        ),
        (
            on and hpc is not None and hpc.scheduler == "slurm",
            "127.0.0.1",
            exporters.slurm_port,
            ("monitoring", "exporters", "slurm_port"),
        ),
        (on, "127.0.0.1", exporters.pipeline_port, ("monitoring", "exporters", "pipeline_port")),
    ]


def _check_kserve(ctx: ValidationContext) -> Iterator[Finding]:
    """KServe serving: pods fetch models from an object store; one scaler that the mode supports."""
    mlops = ctx.config.mlops
    serving = mlops.serving
    if serving.backend != "kserve":
        return
    if mlops.object_store.backend != "s3":
        yield error(
            ("mlops", "object_store", "backend"),
            "KServe's storage-initializer cannot read a file:// object store on this machine",
            "set mlops.object_store.backend: s3 with the endpoint of the stack's SeaweedFS (or any S3)",
            "mlops.kserve_file_store",
        )
    if serving.deployment_mode == "Knative" and serving.autoscaling.autoscaler == "keda":
        yield error(
            ("mlops", "serving", "autoscaling", "autoscaler"),
            "KEDA does not scale InferenceServices in KServe's Knative mode (Knative scales on concurrency)",
            "set autoscaler: hpa (ignored in Knative mode), or deployment_mode: Standard",
            "mlops.kserve_keda_knative",
        )


RULES: list[Rule] = [
    check_network_overlaps,
    check_node_addresses,
    check_names,
    check_pcie_passthrough,
    check_capacity,
    check_slurm,
    check_kubernetes,
    check_kubespray_settings,
    check_mlops,
]


def validate(
    loaded: LoadedConfig,
    *,
    force: bool = False,
    host: HostResources | None = None,
    disk_path: Path | None = None,
) -> ValidationReport:
    """Run every rule over a schema-valid config and collect all findings (with YAML lines)."""
    config = loaded.config
    host = host or host_resources(config, disk_path or Path.cwd())
    plan = build_plan(config, host)
    ctx = ValidationContext(config, host, plan, force, list(iter_vms(config)))
    findings = [finding for rule in RULES for finding in rule(ctx)]
    for finding in findings:
        finding.line = loaded.source.line_of(finding.path)
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    findings.sort(key=lambda f: (order[f.severity], f.line or 0))
    return ValidationReport(loaded, plan, findings)
