"""The clusters' VM lifecycle on libvirt's test driver: what start defines, rollback, ownership, destroy."""

from __future__ import annotations

import contextlib
import copy
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.loader import LoadedConfig, load_config
from ai_how.config.models import PCIeDevice
from ai_how.config.topology import ClusterSide
from ai_how.errors import AiHowError
from ai_how.failpoints import FailpointError
from ai_how.layout import Layout
from ai_how.provision import gpu_owners
from ai_how.provision.lifecycle import ClusterLifecycle, PreflightFailed
from ai_how.provision.spec import METADATA_NS, cluster_definition
from ai_how.state.store import StateStore
from tests.provision.libvirt_host import write_node

libvirt = pytest.importorskip("libvirt")

Factory = Callable[..., ClusterLifecycle]


@pytest.fixture
def base_image(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "base.qcow2"
    path.parent.mkdir()
    path.write_bytes(b"QFI\xfb")  # the test driver never reads it; start only checks it exists
    return path


@pytest.fixture
def example(example_data: dict[str, Any], base_image: Path) -> dict[str, Any]:
    for side in ("hpc", "cloud"):
        example_data["clusters"][side]["base_image_path"] = str(base_image)
    return example_data


def _devices(data: dict[str, Any]) -> list[PCIeDevice]:
    return [PCIeDevice(**d) for d in data["host"]["pcie_devices"]]


@pytest.fixture
def host(tmp_path: Path, example: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """One connection to a test host holding the example's GPUs (bound to nothing: libvirt manages them)."""
    uri = write_node(tmp_path / "node.xml", _devices(example))
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(uri)
    yield uri, conn
    conn.close()


@pytest.fixture
def make(tmp_path: Path, host: tuple[str, Any], write_config: Callable[[dict[str, Any]], Path]) -> Factory:
    uri, conn = host
    store = StateStore(tmp_path / "state")

    def factory(
        data: dict[str, Any], side: ClusterSide, progress: list[str] | None = None
    ) -> ClusterLifecycle:
        loaded: LoadedConfig = load_config(write_config(data))
        cluster = cluster_definition(loaded, side, Layout(store.root), uri=uri)
        say = progress.append if progress is not None else (lambda _m: None)
        return ClusterLifecycle(cluster, conn, store, uri=uri, progress=say)

    return factory


def _names(conn: Any) -> dict[str, set[str]]:
    pools = conn.listAllStoragePools()
    return {
        "domains": {d.name() for d in conn.listAllDomains()},
        "networks": {n.name() for n in conn.listAllNetworks()},
        "pools": {p.name() for p in pools},
        "volumes": {v for p in pools if p.isActive() for v in p.listVolumes()},
    }


def _xml(obj: Any) -> ET.Element:
    return ET.fromstring(obj.XMLDesc())


def test_hpc_start_defines_network_leases_disks_and_gpu_hostdevs(
    make: Factory, host: tuple[str, Any], example: dict[str, Any]
) -> None:
    _, conn = host
    life = make(example, "hpc")
    rows = life.start(virt_type="test")
    assert [(r.name, r.state) for r in rows] == [("hpc-controller", "running"), ("hpc-compute-01", "running")]

    net = _xml(conn.networkLookupByName("aihow-training-cluster"))
    assert net.find("forward").get("mode") == "nat"
    assert net.find("bridge").get("name") == "virbr100"
    assert net.find("ip").get("address") == "192.168.100.1"
    leases = {(h.get("name"), h.get("ip")) for h in net.iter("host")}
    assert leases == {("hpc-controller", "192.168.100.10"), ("hpc-compute-01", "192.168.100.11")}
    macs = {h.get("mac") for h in net.iter("host")}

    compute = conn.lookupByName("hpc-compute-01")
    dom = _xml(compute)
    assert dom.findtext("vcpu") == "8"
    assert int(dom.findtext("memory")) == 32 * 1024 * 1024  # KiB
    assert (
        dom.find("os/type").get("machine").startswith("pc-q35") or dom.find("os/type").get("machine") == "q35"
    )
    hostdevs = [
        tuple(a.get(k) for k in ("bus", "slot", "function"))
        for a in dom.iterfind("devices/hostdev[@type='pci']/source/address")
    ]
    assert sorted(hostdevs) == [("0x65", "0x00", "0x0"), ("0x65", "0x00", "0x1")]  # GPU + its audio
    assert dom.find("devices/interface/mac").get("address") in macs
    assert dom.find("devices/interface/source").get("network") == "aihow-training-cluster"
    seed = dom.find("devices/disk/target[@dev='vdb']/../source")
    assert (seed.get("pool"), seed.get("volume")) == ("aihow-training-cluster", "hpc-compute-01-seed.iso")
    pool = conn.storagePoolLookupByName("aihow-training-cluster")
    overlay = _xml(pool.storageVolLookupByName("hpc-compute-01.qcow2"))
    base = overlay.findtext("backingStore/path")
    assert Path(base).name.startswith("base-") and Path(base).parent == life.cluster.pool_dir
    meta = ET.fromstring(compute.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS))
    assert (meta.get("cluster"), meta.get("role")) == ("hpc", "slurm-compute")
    controller = _xml(conn.lookupByName("hpc-controller"))
    assert controller.find("devices/hostdev") is None
    assert "hpc-compute-01.qcow2" in _names(conn)["volumes"]

    owners = gpu_owners.owners(life.store)
    assert [(o.pci_address, o.holder) for o in owners] == [("0000:65:00.0", "hpc/hpc-compute-01")]


def test_start_is_idempotent(make: Factory, host: tuple[str, Any], example: dict[str, Any]) -> None:
    _, conn = host
    first = make(example, "hpc")
    first.start(virt_type="test")
    journal = first.journal.entries()
    before = _names(conn)
    again: list[str] = []
    make(example, "hpc", again).start(virt_type="test")
    assert _names(conn) == before
    assert first.journal.entries() == journal
    assert not [m for m in again if m.startswith("created")]


def test_gpu_owned_by_running_cluster_is_refused_before_anything_is_created(
    make: Factory, host: tuple[str, Any], example: dict[str, Any]
) -> None:
    _, conn = host
    hpc = make(example, "hpc")
    hpc.start(virt_type="test")
    before = _names(conn)
    cloud = make(example, "cloud")
    with pytest.raises(AiHowError) as refused:
        cloud.start(virt_type="test")
    assert "0000:65:00.0" in refused.value.message
    assert "cloud/gpu-worker-1" in refused.value.message and "hpc/hpc-compute-01" in refused.value.message
    assert "ai-how hpc stop" in (refused.value.fix or "")
    assert _names(conn) == before  # nothing of the cloud cluster was created
    assert cloud.journal.entries() == []

    assert hpc.stop(timeout_s=5) == ["hpc-controller", "hpc-compute-01"]
    assert gpu_owners.owners(hpc.store) == []
    rows = cloud.start(virt_type="test")  # the time-shared GPU moves to the inference side
    assert all(r.state == "running" for r in rows)
    assert {o.holder for o in gpu_owners.owners(cloud.store)} == {"cloud/gpu-worker-1", "cloud/gpu-worker-2"}
    assert [r.state for r in hpc.status()] == ["shut off", "shut off"]


def test_stale_gpu_claim_of_a_stopped_vm_does_not_block(make: Factory, example: dict[str, Any]) -> None:
    hpc = make(example, "hpc")
    hpc.start(virt_type="test")
    hpc.conn.lookupByName("hpc-compute-01").destroy()  # crashed or powered off behind ai-how's back
    assert gpu_owners.owners(hpc.store)  # the claim is still recorded...
    make(example, "cloud").start(virt_type="test")  # ...but it is stale: the VM is not running


@pytest.mark.parametrize("nth", [1, 2, 3, 4, 6, 9])
def test_failure_midway_rolls_back_everything_start_created(
    make: Factory, host: tuple[str, Any], example: dict[str, Any], monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    _, conn = host
    before = _names(conn)
    monkeypatch.setenv("AI_HOW_FAILPOINTS", f"provision.created={nth}:raise")
    life = make(example, "hpc")
    with pytest.raises(FailpointError):
        life.start(virt_type="test")
    assert _names(conn) == before
    assert life.journal.entries() == []
    assert gpu_owners.owners(life.store) == []


def test_failure_while_booting_rolls_back_and_releases_gpus(
    make: Factory, host: tuple[str, Any], example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, conn = host
    before = _names(conn)
    monkeypatch.setenv("AI_HOW_FAILPOINTS", "provision.booted=2:raise")
    life = make(example, "hpc")
    with pytest.raises(FailpointError):
        life.start(virt_type="test")
    assert _names(conn) == before
    assert gpu_owners.owners(life.store) == []


def test_rollback_keeps_what_existed_before(
    make: Factory, host: tuple[str, Any], example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second start that fails (a VM added to the config) removes only the new VM's objects."""
    _, conn = host
    make(example, "hpc").start(virt_type="test")
    make(example, "hpc").stop(timeout_s=5)
    grown = copy.deepcopy(example)
    grown["clusters"]["hpc"]["compute_nodes"].append(
        {
            "name": "hpc-compute-02",
            "cpu_cores": 2,
            "memory_gb": 4,
            "disk_gb": 20,
            "ip_address": "192.168.100.12",
        }
    )
    monkeypatch.setenv("AI_HOW_FAILPOINTS", "provision.created=2:raise")  # volume, seed, (fail) domain
    life = make(grown, "hpc")
    with pytest.raises(FailpointError):
        life.start(virt_type="test")
    names = _names(conn)
    assert {"hpc-controller", "hpc-compute-01"} <= names["domains"]
    assert "hpc-compute-02" not in names["domains"] and "hpc-compute-02.qcow2" not in names["volumes"]
    assert "aihow-training-cluster" in names["networks"]
    assert [r.state for r in life.status()] == [
        "shut off",
        "shut off",
        "not created",
    ]  # booted ones shut again


def test_destroy_removes_only_what_ai_how_created(
    make: Factory, host: tuple[str, Any], example: dict[str, Any]
) -> None:
    _, conn = host
    conn.defineXML(
        "<domain type='test'><name>foreign-vm</name><memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    conn.networkDefineXML(
        "<network><name>foreign-net</name><bridge name='virbr9'/><ip address='10.9.0.1' netmask='255.255.255.0'/>"
        "</network>"
    )
    before = _names(conn)
    hpc = make(example, "hpc")
    hpc.start(virt_type="test")
    removed = hpc.destroy()
    assert {r.kind for r in removed} == {"network", "pool", "volume", "domain"}
    assert _names(conn) == before  # foreign-vm, foreign-net (and the driver's own 'test') survive
    assert hpc.journal.entries() == []
    assert gpu_owners.owners(hpc.store) == []
    assert hpc.status()[0].state == "not created"


def test_bad_inputs_are_refused_before_anything_is_created(
    make: Factory, host: tuple[str, Any], example: dict[str, Any], tmp_path: Path
) -> None:
    _, conn = host
    before = _names(conn)

    missing = copy.deepcopy(example)
    missing["clusters"]["hpc"]["base_image_path"] = str(tmp_path / "nope.qcow2")
    with pytest.raises(PreflightFailed) as exc:
        make(missing, "hpc").start(virt_type="test")
    assert exc.value.findings[0].code == "host.base_image_missing"
    assert "ai-how image build hpc-base" in exc.value.findings[0].fix

    conn.networkDefineXML(
        "<network><name>other</name><bridge name='virbr100'/><ip address='10.8.0.1' netmask='255.255.255.0'/>"
        "</network>"
    )
    with pytest.raises(PreflightFailed) as exc:
        make(example, "hpc").start(virt_type="test")
    assert [f.code for f in exc.value.findings if f.severity == "error"] == ["host.bridge_busy"]
    assert "clusters.hpc.network.bridge" in exc.value.findings[0].where
    conn.networkLookupByName("other").undefine()

    absent = copy.deepcopy(example)
    devices = absent["clusters"]["hpc"]["compute_nodes"][0]["pcie_passthrough"]["devices"]
    for device in devices:
        device["pci_address"] = device["pci_address"].replace("65:", "17:")
    absent["host"]["pcie_devices"] += devices  # keep the config valid; the host lacks them
    with pytest.raises(PreflightFailed) as exc:
        make(absent, "hpc").start(virt_type="test")
    errors = [f for f in exc.value.findings if f.severity == "error"]
    assert {f.code for f in errors} == {"host.pci_missing"} and "0000:17:00.0" in errors[0].message

    assert _names(conn) == before


def test_iommu_off_is_reported(
    tmp_path: Path, example: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    uri = write_node(tmp_path / "no-iommu.xml", _devices(example), iommu=False)
    conn = libvirt.open(uri)
    try:
        cluster = cluster_definition(
            load_config(write_config(example)), "hpc", Layout(tmp_path / "s"), uri=uri
        )
        life = ClusterLifecycle(cluster, conn, StateStore(tmp_path / "s"), uri=uri)
        with pytest.raises(PreflightFailed) as exc:
            life.start(virt_type="test")
        assert {f.code for f in exc.value.findings if f.severity == "error"} == {"host.iommu_off"}
        assert "intel_iommu=on" in exc.value.findings[0].fix
    finally:
        conn.close()


def test_dry_run_renders_every_object_and_creates_nothing(
    make: Factory, host: tuple[str, Any], example: dict[str, Any]
) -> None:
    _, conn = host
    before = _names(conn)
    text = make(example, "cloud").dry_run(virt_type="kvm")
    assert _names(conn) == before
    assert text.count("<domain ") == 4 and text.count("<hostdev ") == 4
    assert "host-passthrough" in text and "192.168.200.13" in text


def test_unreachable_libvirt_is_one_line_with_the_fix() -> None:
    from ai_how.provision.libvirt_conn import connect

    with pytest.raises(AiHowError) as exc, contextlib.ExitStack() as stack:
        stack.enter_context(connect("qemu+unix:///system?socket=/nonexistent/libvirt-sock"))
    assert "cannot reach libvirt" in exc.value.message
    assert "start the daemon" in (exc.value.fix or "")


def test_stop_never_touches_a_same_named_domain_ai_how_did_not_create(
    make: Factory, host: tuple[str, Any], example: dict[str, Any]
) -> None:
    _, conn = host
    foreign = conn.defineXML(
        "<domain type='test'><name>hpc-controller</name><memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    foreign.create()
    assert make(example, "hpc").stop(timeout_s=1) == []
    assert foreign.isActive()
    assert make(example, "hpc").status()[0].state == "not created"


def test_a_second_cluster_on_the_same_side_is_refused(make: Factory, example: dict[str, Any]) -> None:
    make(example, "hpc").start(virt_type="test")
    other = copy.deepcopy(example)
    other["clusters"]["hpc"]["name"] = "another-cluster"
    with pytest.raises(AiHowError) as exc:
        make(other, "hpc").start(virt_type="test")
    assert "training-cluster" in exc.value.message and "destroy" in (exc.value.fix or "")


def test_a_gpu_claim_never_overwrites_a_running_owner(make: Factory, example: dict[str, Any]) -> None:
    hpc = make(example, "hpc")
    hpc.start(virt_type="test")
    taken = gpu_owners.claim(hpc.store, "cloud", "gpu-worker-1", ["0000:65:00.0"], hpc._running)
    assert taken is not None and taken.holder == "hpc/hpc-compute-01"
    assert [o.holder for o in gpu_owners.owners(hpc.store)] == ["hpc/hpc-compute-01"]


def test_status_shows_the_vm_as_defined_not_as_the_edited_config(
    make: Factory, example: dict[str, Any]
) -> None:
    make(example, "hpc").start(virt_type="test")
    edited = copy.deepcopy(example)
    edited["clusters"]["hpc"]["controller"]["cpu_cores"] = 2
    rows = {r.name: r for r in make(edited, "hpc").status()}
    assert rows["hpc-controller"].cpu_cores == 4  # the running domain still has 4 vCPUs
    assert rows["hpc-compute-01"].memory_gb == 32 and rows["hpc-compute-01"].gpus == ["RTX A6000"]
