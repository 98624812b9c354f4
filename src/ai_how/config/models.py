"""Typed model of ``cluster.yaml``: the HPC cluster, the cloud cluster, the MLOps stack and monitoring.

Every model rejects unknown keys. Secrets never appear as values: credentials are
named by environment variable (``*_env``) or by Kubernetes Secret (``kubernetes_secret``).
Cross-field rules that need the whole config (subnet overlaps, GPU conflicts,
capacity) live in :mod:`ai_how.config.validate`, not here.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Keys that would hold a secret in plain text; each has an ``*_env`` replacement.
PLAINTEXT_SECRET_KEYS = frozenset(
    {
        "password",
        "root_password",
        "secret",
        "secret_key",
        "secret_access_key",
        "access_key",
        "access_key_id",
        "token",
        "api_key",
    }
)

PciAddress = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        pattern=r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$",
    ),
]
HexId = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[0-9a-f]{4}$")]
DnsLabel = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"),
]
EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
BridgeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
Duration = Annotated[str, StringConstraints(pattern=r"^\d+(ms|s|m|h|d|w|y)$")]


def _address_as_text(value: Any) -> Any:
    """IP fields take text (or an ipaddress object): Python's ipaddress would turn `true` or 3232261130 into one."""
    if isinstance(value, bool | int | float):
        raise PydanticCustomError("ip_text", "expected an address as text, got {value!r}", {"value": value})
    return value


IPv4Addr = Annotated[IPv4Address, BeforeValidator(_address_as_text)]
IPv4Net = Annotated[IPv4Network, BeforeValidator(_address_as_text)]
PositiveInt = Annotated[int, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """Base for every config model: unknown keys are errors, and no plain-text secrets."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_plaintext_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and key.lower() in PLAINTEXT_SECRET_KEYS:
                    raise PydanticCustomError(
                        "plaintext_secret",
                        "plain-text secret '{key}' is not allowed in the config; "
                        "name an environment variable with '{key}_env: VAR' "
                        "(or a Kubernetes Secret with 'kubernetes_secret: NAME')",
                        {"key": key},
                    )
        return data


# --------------------------------------------------------------------------- shared pieces


class Metadata(Model):
    name: DnsLabel = Field(description="Name of this deployment (DNS label).")
    description: str = ""


class PCIeDevice(Model):
    """One PCI function passed through to a VM (or listed in the host inventory)."""

    pci_address: PciAddress = Field(description="Domain:bus:slot.function, e.g. 0000:65:00.0")
    device_type: Literal["gpu", "audio", "usb", "nvme", "network", "other"]
    vendor_id: HexId
    device_id: HexId
    iommu_group: Annotated[int, Field(ge=0)]
    label: str | None = Field(default=None, description="Human name, e.g. 'RTX A6000'.")

    @property
    def slot(self) -> str:
        """The address without its function number (functions of one card share it)."""
        return self.pci_address.rsplit(".", 1)[0]


class PCIePassthrough(Model):
    enabled: bool = False
    devices: list[PCIeDevice] = Field(default_factory=list)


class VMSpec(Model):
    """Resources and address of one virtual machine."""

    name: DnsLabel | None = Field(default=None, description="VM name; generated when omitted.")
    cpu_cores: PositiveInt
    memory_gb: PositiveInt
    disk_gb: PositiveInt
    ip_address: IPv4Addr = Field(validation_alias=AliasChoices("ip_address", "ip"))
    pcie_passthrough: PCIePassthrough = Field(default_factory=PCIePassthrough)

    @property
    def passthrough_devices(self) -> list[PCIeDevice]:
        return self.pcie_passthrough.devices if self.pcie_passthrough.enabled else []

    @property
    def gpus(self) -> list[PCIeDevice]:
        return [d for d in self.passthrough_devices if d.device_type == "gpu"]


class DNSSpec(Model):
    enabled: bool = True
    nameservers: list[IPv4Addr] = Field(default_factory=list)


class NetworkSpec(Model):
    subnet: IPv4Net
    bridge: BridgeName
    dns: DNSSpec | None = None

    @field_validator("subnet", mode="before")
    @classmethod
    def _strict_subnet(cls, value: Any) -> Any:
        # IPv4Network rejects host bits itself; give the fix in the message.
        if isinstance(value, str) and "/" in value:
            try:
                IPv4Network(value)
            except ValueError as exc:
                if "host bits set" in str(exc):
                    net = IPv4Network(value, strict=False)
                    raise PydanticCustomError(
                        "subnet_host_bits",
                        "'{value}' has host bits set; the network is '{net}'",
                        {"value": value, "net": str(net)},
                    ) from exc
        return value


class HostSpec(Model):
    """The workstation the clusters run on. When omitted, this machine is measured."""

    cpu_cores: PositiveInt
    memory_gb: PositiveInt
    disk_gb: PositiveInt
    pcie_devices: list[PCIeDevice] = Field(
        default_factory=list,
        description="Host PCI inventory (every function of each IOMMU group) for passthrough checks.",
    )


# --------------------------------------------------------------------------- HPC cluster


class SlurmPartition(Model):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")]
    nodes: list[str] = Field(default_factory=list, description="Compute node names; empty = all.")
    default: bool = False
    max_time: str = "INFINITE"


class SlurmConfig(Model):
    partitions: list[SlurmPartition] = Field(
        default_factory=list,
        description="Partitions; jobs go to the one marked default (else SLURM's default).",
    )
    gres_types: list[str] = Field(default_factory=lambda: ["gpu"])
    login: str | None = Field(
        default=None,
        description="user@host of the login node for SSH submission; omitted = run sbatch on this machine.",
    )
    ssh_options: list[str] = Field(
        default_factory=list,
        description="Extra ssh arguments for the login node, e.g. ['-i', '~/.ssh/ai_how_cluster_key'].",
    )
    container_runtime: Literal["none", "apptainer"] = "none"
    container_image: str | None = None
    cpus_per_task: PositiveInt = 2
    mem: Annotated[str, StringConstraints(pattern=r"^\d+[KMGT]?$")] = "4G"
    time: Annotated[str, StringConstraints(pattern=r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^INFINITE$")] = "01:00:00"
    python: str | None = Field(
        default=None, description="Python with ai-how installed on the compute nodes (default: this one)."
    )
    master_port: Port = 29500

    @field_validator("login")
    @classmethod
    def _login_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]+@[A-Za-z0-9._-]+(:\d+)?", value):
            raise PydanticCustomError(
                "login_format",
                "login must look like 'user@host' or 'user@host:port', got '{value}'",
                {"value": value},
            )
        return value


class SharedStorage(Model):
    """The shared filesystem of the HPC side (BeeGFS in the reference design)."""

    type: Literal["beegfs", "nfs", "local"] = "local"
    mount_point: str = Field(description="Path where the shared filesystem is mounted on every node.")


class HPCCluster(Model):
    name: DnsLabel
    base_image_path: str | None = None
    auto_start: bool = True
    scheduler: Literal["local", "slurm"] = Field(
        default="local", description="How training jobs run: on this machine, or submitted to SLURM."
    )
    network: NetworkSpec | None = None
    controller: VMSpec | None = None
    compute_nodes: list[VMSpec] = Field(default_factory=list)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    storage: SharedStorage | None = None

    @model_validator(mode="after")
    def _vms_need_network(self) -> HPCCluster:
        if (self.controller or self.compute_nodes) and self.network is None:
            raise PydanticCustomError(
                "network_required",
                "VMs are defined but 'network' is missing; add network.subnet and bridge",
                {},
            )
        return self


# --------------------------------------------------------------------------- cloud cluster


class Taint(Model):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeMonitoring(Model):
    prometheus: bool = False
    grafana: bool = False
    node_exporter: bool = True


class ControlPlane(VMSpec):
    kubernetes_role: Literal["control-plane"] = "control-plane"
    high_availability: bool = False
    monitoring: NodeMonitoring = Field(default_factory=NodeMonitoring)


class WorkerNode(VMSpec):
    worker_type: Literal["cpu", "gpu"]
    kubernetes_role: Literal["worker"] = "worker"
    node_labels: dict[str, str] = Field(default_factory=dict)
    node_taints: list[Taint] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)


class WorkerNodes(Model):
    cpu: list[WorkerNode] = Field(default_factory=list)
    gpu: list[WorkerNode] = Field(default_factory=list)


class KubeNetworking(Model):
    cni: Literal["calico", "flannel", "cilium"] = "calico"
    cni_version: str | None = None
    pod_cidr: IPv4Net = IPv4Network("10.244.0.0/16")
    service_cidr: IPv4Net = IPv4Network("10.96.0.0/12")
    dns_domain: str = "cluster.local"


class Ingress(Model):
    provider: Literal["nginx", "traefik"] = "nginx"
    enabled: bool = True
    replicas: PositiveInt = 1
    load_balancer_ip: IPv4Addr | None = None


class StorageClass(Model):
    name: DnsLabel
    provisioner: str
    reclaim_policy: Literal["Delete", "Retain"] = "Delete"
    parameters: dict[str, str] = Field(default_factory=dict)


class KubeStorage(Model):
    default_class: str = "local-path"
    classes: list[StorageClass] = Field(
        default_factory=lambda: [StorageClass(name="local-path", provisioner="rancher.io/local-path")]
    )


class Toggle(Model):
    enabled: bool = True


class DevicePlugin(Model):
    enabled: bool = True
    mig_strategy: Literal["none", "single", "mixed"] = "none"
    time_slicing: bool = False
    time_slicing_replicas: Annotated[int, Field(ge=2, le=64)] = Field(
        default=4, description="With time_slicing: how many pods share each GPU (nvidia.com/gpu replicas)."
    )


class Dcgm(Model):
    enabled: bool = True
    port: Port = 5555


class GpuOperator(Model):
    enabled: bool = False
    version: str | None = None
    driver_version: str | None = None
    device_plugin: DevicePlugin = Field(default_factory=DevicePlugin)
    gfd: Toggle = Field(default_factory=Toggle)
    dcgm: Dcgm = Field(default_factory=Dcgm)


StrictFlag = Annotated[bool, Strict()]  # `"yes"` (a string) is an error here, as Kubespray treats it


class Kubespray(Model):
    """Which Kubespray release builds the cluster (obtained by git tag, the commit verified)."""

    version: Annotated[str, StringConstraints(pattern=r"^v2\.\d+\.\d+$")] = Field(
        default="v2.31.0", description="Kubespray release tag, e.g. v2.31.0 or v2.30.0."
    )
    commit: Annotated[str, StringConstraints(to_lower=True, pattern=r"^[0-9a-f]{40}$")] | None = Field(
        default=None, description="The tag's commit; default: the commit ai-how knows for that release."
    )
    repository: str = Field(
        default="https://github.com/kubernetes-sigs/kubespray.git", description="Where to clone it from."
    )
    checkout: str | None = Field(
        default=None,
        description="An existing Kubespray checkout to use instead of cloning (its commit is verified).",
    )


class KubernetesConfig(Model):
    version: Annotated[str, StringConstraints(pattern=r"^v?1\.\d+(\.\d+)?$")] = Field(
        default="1.35.4", description="Kubernetes version; must be one the Kubespray release installs."
    )
    runtime: Literal["containerd", "cri-o"] = "containerd"
    runtime_version: str | None = Field(
        default=None, description="containerd version (default: Kubespray's)."
    )
    proxy_mode: Literal["ipvs", "iptables", "nftables"] = "ipvs"
    node_prefix: Annotated[int, Field(ge=16, le=28)] = Field(
        default=24, description="Pod subnet size per node (kube_network_node_prefix)."
    )
    nodelocaldns: StrictFlag = True
    metrics_server: StrictFlag = True
    helm: StrictFlag = True
    etcd_nodes: list[str] = Field(
        default_factory=list, description="VMs that run etcd (default: the control plane); an odd number."
    )
    kubespray: Kubespray = Field(default_factory=Kubespray)
    networking: KubeNetworking = Field(default_factory=KubeNetworking)
    ingress: Ingress = Field(default_factory=Ingress)
    storage: KubeStorage = Field(default_factory=KubeStorage)
    gpu_operator: GpuOperator = Field(default_factory=GpuOperator)


class CloudCluster(Model):
    name: DnsLabel
    base_image_path: str | None = None
    auto_start: bool = True
    kubeconfig: str | None = Field(
        default=None, description="Path of the kubeconfig of an existing cluster (default: $KUBECONFIG)."
    )
    network: NetworkSpec
    control_plane: ControlPlane
    worker_nodes: WorkerNodes = Field(default_factory=WorkerNodes)
    kubernetes_config: KubernetesConfig = Field(default_factory=KubernetesConfig)


class Clusters(Model):
    hpc: HPCCluster | None = None
    cloud: CloudCluster | None = None


# --------------------------------------------------------------------------- MLOps stack


class SecretRef(Model):
    """Where a credential comes from: an environment variable here, a Kubernetes Secret in-cluster."""

    kubernetes_secret: DnsLabel | None = None


class S3Credentials(SecretRef):
    access_key_id_env: EnvVarName = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: EnvVarName = "AWS_SECRET_ACCESS_KEY"
    session_token_env: EnvVarName | None = None


class Buckets(Model):
    models: DnsLabel = "models"
    artifacts: DnsLabel = "mlflow-artifacts"
    datasets: DnsLabel = "datasets"


class ObjectStore(Model):
    """Where model versions are synced to: a directory (``file``) or any S3 endpoint (``s3``)."""

    backend: Literal["file", "s3"] = "file"
    root: str | None = Field(
        default=None, description="file backend: directory (default <state-dir>/objects)."
    )
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/.*)?$")] | None = Field(
        default=None, description="s3 backend: endpoint URL (MinIO, SeaweedFS, ...); omitted = AWS."
    )
    region: str = "us-east-1"
    buckets: Buckets = Field(default_factory=Buckets)
    credentials: S3Credentials = Field(default_factory=S3Credentials)
    serve_local: bool = Field(
        default=False, description="Start a local S3 endpoint at 'endpoint' with `ai-how stack up`."
    )
    in_cluster_endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/.*)?$")] | None = (
        Field(
            default=None,
            description="kserve: the S3 endpoint as pods in the cloud cluster reach it (default: endpoint).",
        )
    )


class PostgreSQL(SecretRef):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 5432
    database: str = "mlflow"
    username: str = "mlflow"
    password_env: EnvVarName = "MLFLOW_DB_PASSWORD"


class MLflowBackendStore(Model):
    type: Literal["sqlite", "postgresql"] = "sqlite"
    path: str | None = Field(
        default=None, description="sqlite: database file (default <state-dir>/mlflow/mlflow.db)."
    )


class MLflowArtifactStore(Model):
    type: Literal["local", "object_store"] = Field(
        default="local", description="Where the server keeps artifacts; clients always go through its proxy."
    )


class MLflow(Model):
    enabled: bool = True
    tracking_uri: str | None = Field(
        default=None, description="Use an existing server; omitted = `ai-how stack up` starts one."
    )
    host: str = "127.0.0.1"
    port: Port = 5000
    experiment: str = "ai-how"
    backend_store: MLflowBackendStore = Field(default_factory=MLflowBackendStore)
    artifact_store: MLflowArtifactStore = Field(default_factory=MLflowArtifactStore)


class Resources(Model):
    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    limits: dict[str, str] = Field(default_factory=lambda: {"cpu": "2", "memory": "4Gi"})


class Autoscaling(Model):
    """Replicas of a served model. On KServe, ``autoscaler`` picks one consistent scaler: the HPA on CPU or
    memory utilisation, or KEDA on a Prometheus query of the server's in-flight requests."""

    enabled: bool = True
    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: PositiveInt = 1
    autoscaler: Literal["hpa", "keda"] = Field(
        default="hpa", description="kserve: hpa (CPU/memory utilisation) or keda (in-flight requests)."
    )
    metric: Literal["cpu", "memory"] = Field(default="cpu", description="hpa: the resource to scale on.")
    target_utilization: Annotated[int, Field(ge=1, le=100)] = Field(
        default=80, description="hpa: target average utilisation of the requested CPU/memory, percent."
    )
    target_concurrency: PositiveInt = Field(
        default=10, description="keda: in-flight requests per replica to scale at."
    )
    prometheus_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/.*)?$")] = Field(
        default="http://kube-prometheus-stack-prometheus.monitoring.svc:9090",
        description="keda: the Prometheus that scrapes the model servers.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise PydanticCustomError(
                "replicas_order",
                "min_replicas ({min}) is greater than max_replicas ({max}); make min_replicas <= max_replicas",
                {"min": self.min_replicas, "max": self.max_replicas},
            )
        return self


class Serving(Model):
    backend: Literal["local", "kserve"] = "local"
    host: str = "127.0.0.1"
    port: Port = 8080
    # Where local model servers run their models: auto = the first GPU when torch sees one.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    namespace: DnsLabel = "models"
    service_account: DnsLabel | None = Field(
        default=None,
        description="kserve: the predictor's ServiceAccount (default ai-how-models when S3 credentials "
        "come from a Kubernetes Secret); it lists that Secret.",
    )
    resources: Resources = Field(default_factory=Resources)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    deployment_mode: Literal["Standard", "Knative"] = Field(
        default="Standard",
        description="kserve: Standard (Deployments, no Knative/Istio) or Knative (scale to zero, canaries).",
    )
    image: str | None = Field(
        default=None,
        description="kserve: the model-server image of ai-how's ServingRuntime "
        "(default ai-how/model-server:<version>, built by `ai-how image server`).",
    )
    llm_runtime: Literal["ai-how", "huggingface"] = Field(
        default="ai-how",
        description="kserve: LLM versions run on ai-how's runtime or on KServe's own huggingfaceserver.",
    )
    huggingface_backend: Literal["auto", "vllm", "huggingface"] = Field(
        default="auto", description="kserve + llm_runtime huggingface: the --backend of huggingfaceserver."
    )
    ready_timeout_s: PositiveInt = Field(
        default=600, description="kserve: how long deploy waits for an InferenceService to be Ready."
    )
    http_workers: PositiveInt = Field(
        default=1,
        le=64,
        description="HTTP processes per model server, sharing each LLM's one engine process "
        "(`--http-workers`); one Python process tops out near 1,000 LLM requests/s, so a GPU server "
        "under heavy load wants ~6.",
    )
    kv_cache_gb: float | None = Field(
        default=None,
        gt=0,
        description="GiB for an LLM engine's KV cache (`--kv-cache-gb`); unset: half the GPU memory free "
        "after the weights (2 on a CPU). Set it when the GPU is shared.",
    )


StackService = Literal["objectstore", "postgresql", "mlflow", "bucket_job"]


class KubeStack(Model):
    """The MLOps stack on the cloud cluster (`ai-how cloud stack render|up|down|status`): namespaces,
    object store, PostgreSQL, MLflow (community chart) and KServe (chart, Standard mode)."""

    namespace: DnsLabel = Field(
        default="mlops", description="Namespace of MLflow, PostgreSQL and the object store."
    )
    monitoring_namespace: DnsLabel = "monitoring"
    object_store: Literal["seaweedfs", "minio"] = Field(
        default="seaweedfs", description="The in-cluster S3 server (MinIO's community edition is archived)."
    )
    object_store_image: str | None = Field(
        default=None, description="Default: the pinned image of the provider."
    )
    object_store_size: str = "50Gi"
    object_store_host_port: Port | None = Field(
        default=None,
        description="Expose the S3 port on its node at this port, so the workstation reaches it "
        "(mlops.object_store.endpoint).",
    )
    postgresql_image: str = "postgres:17.6"
    postgresql_size: str = "10Gi"
    bucket_job_image: str = "amazon/aws-cli:2.34.48"
    mlflow_host: str = Field(default="mlflow.ai-how.local", description="The MLflow Ingress host.")
    ingress_domain: str = Field(
        default="ai-how.local", description="KServe: InferenceService hosts are <name>-<namespace>.<domain>."
    )
    service_monitors: bool = Field(
        default=True,
        description="ServiceMonitors for MLflow and the object store (needs the Prometheus Operator CRDs).",
    )
    resources: dict[StackService, Resources] = Field(
        default_factory=dict, description="Per service; omitted services get ai-how's defaults."
    )


class MLOps(Model):
    mlflow: MLflow = Field(default_factory=MLflow)
    object_store: ObjectStore = Field(default_factory=ObjectStore)
    postgresql: PostgreSQL = Field(default_factory=PostgreSQL)
    serving: Serving = Field(default_factory=Serving)
    kubernetes: KubeStack = Field(default_factory=KubeStack)


# --------------------------------------------------------------------------- monitoring


class Prometheus(Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9090
    scrape_interval: Duration = "15s"
    evaluation_interval: Duration = "15s"
    retention: Duration = "15d"
    external_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels this Prometheus adds to every series (e.g. cluster: hpc)."
    )


Severity = Literal["critical", "warning", "info"]


class Receiver(Model):
    """Where Alertmanager sends alerts; URLs and passwords come from environment variables, never the file."""

    name: DnsLabel
    webhook_url_env: EnvVarName | None = Field(
        default=None, description="Environment variable holding a webhook URL (Slack, Teams, a pager...)."
    )
    email_to: str | None = None
    email_from: str | None = None
    smarthost: str | None = Field(default=None, description="SMTP server host:port for email.")
    smtp_password_env: EnvVarName | None = None
    severities: list[Severity] = Field(
        default_factory=lambda: list[Severity](["critical", "warning"]),
        description="Alerts of these severities go here.",
    )


class Alertmanager(Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9093
    receivers: list[Receiver] = Field(default_factory=list)
    group_wait: Duration = "30s"
    group_interval: Duration = Field(
        default="5m",
        description="How long Alertmanager waits before telling a group's changes (resolutions too).",
    )
    repeat_interval: Duration = "4h"


class Exporters(Model):
    """Ports of the exporters ``ai-how stack up`` runs beside Prometheus."""

    node_exporter: bool = True
    node_exporter_port: Port = 9100
    slurm_port: Port = Field(
        default=9341, description="`ai-how exporter slurm` (when the HPC side is SLURM)."
    )
    pipeline_port: Port = Field(default=9342, description="`ai-how exporter pipeline`: runs, stages, syncs.")


class Slo(Model):
    """Service levels the alert rules enforce."""

    inference_p95_seconds: Annotated[float, Field(gt=0)] = 0.5
    error_rate: Annotated[float, Field(gt=0, lt=1)] = 0.05
    gpu_temperature_celsius: PositiveInt = 85
    job_pending_minutes: PositiveInt = 30


class Federation(Model):
    """The cloud cluster's Prometheus pulls the HPC side's series (``/federate`` with ``honor_labels``)."""

    enabled: bool = False
    hpc_prometheus_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/.*)?$")] | None = None
    match: list[str] = Field(
        default_factory=lambda: ['{job=~"slurm|node|dcgm|pipeline"}', '{__name__=~"job:.*"}'],
        description="match[] selectors of the series to federate.",
    )


class Grafana(Model):
    enabled: bool = True
    url: str | None = None
    dashboards: list[str] = Field(default_factory=lambda: ["inference-metrics", "mlops-pipeline"])


class Logging(Model):
    enabled: bool = False
    provider: Literal["loki", "none"] = "loki"
    retention: Duration = "7d"


class Monitoring(Model):
    alert_for: Duration | None = Field(
        default=None,
        description="Replace every alert rule's `for:` with this duration (demos and tests; omit in production).",
    )
    prometheus: Prometheus = Field(default_factory=Prometheus)
    alertmanager: Alertmanager = Field(default_factory=Alertmanager)
    exporters: Exporters = Field(default_factory=Exporters)
    slo: Slo = Field(default_factory=Slo)
    federation: Federation = Field(default_factory=Federation)
    grafana: Grafana = Field(default_factory=Grafana)
    logging: Logging = Field(default_factory=Logging)


# --------------------------------------------------------------------------- root


class ClusterConfig(Model):
    """The whole ``cluster.yaml``."""

    version: Literal["1.0"] = "1.0"
    metadata: Metadata
    host: HostSpec | None = None
    clusters: Clusters = Field(default_factory=Clusters)
    mlops: MLOps = Field(default_factory=MLOps)
    monitoring: Monitoring = Field(default_factory=Monitoring)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 1.0` (unquoted) arrives as a float.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# Human descriptions of the string patterns above, used in error messages.
PATTERN_HINTS: dict[str, str] = {
    r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$": "a PCI address like 0000:65:00.0",
    r"^[0-9a-f]{4}$": "4 hex digits like 10de",
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$": "a DNS label: lower-case letters, digits and '-' (e.g. gpu-worker-1)",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "an environment variable name like AWS_ACCESS_KEY_ID",
    r"^[A-Za-z0-9_.-]{1,15}$": "a Linux bridge name of at most 15 characters like virbr100",
    r"^\d+(ms|s|m|h|d|w|y)$": "a duration like 15s, 5m or 30d",
    r"^v?1\.\d+(\.\d+)?$": "a Kubernetes version like 1.28 or v1.28.3",
    r"^[A-Za-z0-9_-]+$": "letters, digits, '_' and '-'",
    r"^https?://[^\s/]+(/.*)?$": "a URL like http://127.0.0.1:9000",
    r"^\d+[KMGT]?$": "a SLURM memory size like 4G or 16000M",
    r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^INFINITE$": "a SLURM time limit like 01:00:00 or 1-12:00:00",
}
