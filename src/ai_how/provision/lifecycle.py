"""Start, stop, inspect and destroy one cluster's VMs through libvirt-python (never by shelling out to virsh).

``start`` is idempotent and journaled: each object is recorded in the state store before it is created,
existing ones recorded earlier are reused, and a failure rolls back every object this call created
(and shuts down VMs this call booted), leaving what existed before. ``destroy`` removes exactly what
the journal names.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_how.config.findings import Finding
from ai_how.errors import AiHowError
from ai_how.failpoints import failpoint
from ai_how.procs import run_logged
from ai_how.provision import cloudinit, gpu_owners
from ai_how.provision.hostcheck import preflight
from ai_how.provision.journal import Journal, Resource
from ai_how.provision.libvirt_conn import is_running, is_test_uri, lookup, module
from ai_how.provision.libvirt_xml import (
    VirtType,
    domain_xml,
    network_xml,
    overlay_volume_xml,
    pool_xml,
    raw_volume_xml,
)
from ai_how.provision.spec import ClusterDefinition, VMDefinition
from ai_how.provision.ssh import ensure_key, wait_for_node
from ai_how.state.store import StateStore

Progress = Callable[[str], None]

# libvirt's virDomainState values, in words.
_STATES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting down",
    5: "shut off",
    6: "crashed",
    7: "suspended",
}


class PreflightFailed(AiHowError):
    """Host checks failed before anything was created; ``findings`` says what and how to fix it."""

    def __init__(self, findings: list[Finding]) -> None:
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first.where}: {first.message}{more}", fix=first.fix)
        self.findings = findings


@dataclass
class VMStatus:
    name: str
    role: str
    state: str  # running, shut off, ..., "not created"
    ip_address: str
    cpu_cores: int
    memory_gb: float
    disk_gb: int
    gpus: list[str] = field(default_factory=list)


class ClusterLifecycle:
    """The libvirt side of one cluster (``hpc`` or ``cloud``) on one connection."""

    def __init__(
        self,
        cluster: ClusterDefinition,
        conn: Any,
        store: StateStore,
        *,
        uri: str,
        progress: Progress = lambda _msg: None,
    ) -> None:
        self.cluster = cluster
        self.conn = conn
        self.store = store
        self.uri = uri
        self.progress = progress
        self.journal = Journal(store, cluster.side)
        self.libvirt = module()

    # ------------------------------------------------------------------ lookups
    def _domain(self, name: str) -> Any | None:
        return lookup(self.conn.lookupByName, name)

    def _our_domain(self, name: str) -> Any | None:
        """The domain ``name`` if ai-how created it (a same-named domain of someone else is never touched)."""
        return self._domain(name) if self.journal.has(Resource("domain", name)) else None

    def _running(self, owner: gpu_owners.Owner) -> bool:
        return is_running(self.conn, owner.vm)

    # ------------------------------------------------------------------ start
    def check(self, *, virt_type: VirtType) -> list[Finding]:
        """Host checks and GPU ownership, before anything is created (raises when one fails)."""
        self._check_same_cluster()
        findings = preflight(self.cluster, self.conn, self.journal, uri=self.uri, virt_type=virt_type)
        if any(f.severity == "error" for f in findings):
            raise PreflightFailed(findings)
        wanted = [(vm.name, gpu.pci_address) for vm in self.cluster.vms for gpu in vm.gpus]
        taken = gpu_owners.conflicts(self.store, self.cluster.side, wanted, self._running)
        if taken:
            vm, address, owner = taken[0]
            raise AiHowError(
                f"GPU {address} of {self.cluster.side}/{vm} is in use by the running VM {owner.holder}",
                fix=f"stop the {owner.cluster} cluster first: `ai-how {owner.cluster} stop CONFIG`",
            )
        return findings

    def _check_same_cluster(self) -> None:
        """A side's journal belongs to one cluster on one libvirt URI and pool: never mix two."""
        if not self.journal.entries():
            return
        recorded = self.journal.info()
        c = self.cluster
        for what, mine, theirs, fix in (
            ("cluster", c.name, recorded.get("name"), f"destroy it first: `ai-how {c.side} destroy CONFIG`"),
            (
                "libvirt URI",
                self.uri,
                recorded.get("uri"),
                f"pass --uri {recorded.get('uri')} (or destroy first)",
            ),
            (
                "pool folder",
                str(c.pool_dir),
                recorded.get("pool_dir"),
                f"pass --pool-dir {recorded.get('pool_dir')}",
            ),
        ):
            if theirs is not None and mine != theirs:
                raise AiHowError(
                    f"the {c.side} cluster ai-how created uses {what} {theirs}, not {mine}", fix=fix
                )

    def start(self, *, virt_type: VirtType, wait: bool = True, timeout_s: float = 900) -> list[VMStatus]:
        self.check(virt_type=virt_type)
        created: list[Resource] = []
        booted: list[str] = []
        try:
            self.journal.describe_cluster(
                name=self.cluster.name,
                uri=self.uri,
                config=str(self.cluster.config_path),
                pool_dir=str(self.cluster.pool_dir),
            )
            public_key = ensure_key(
                self.cluster.ssh_key,
                comment=f"ai-how@{self.cluster.name}",
                log_path=self.cluster.log_dir / "ssh-keygen.log",
            )
            try:
                self._ensure_network(created)
                self._ensure_pool(created)
                backing = self._ensure_base(created)
                for vm in self.cluster.vms:
                    self._ensure_vm(vm, public_key, backing, virt_type, created)
                for vm in self.cluster.vms:
                    if self._boot(vm):
                        booted.append(vm.name)
            except self.libvirt.libvirtError as exc:
                raise AiHowError(
                    f"libvirt refused: {exc.get_error_message()}",
                    fix="fix the cause named above; everything this start created was removed",
                ) from None
            if wait:
                self._wait(timeout_s)
        except BaseException as exc:
            self.progress(f"start failed ({exc}); rolling back what this start created")
            self._rollback(created, booted)
            raise
        return self.status()

    def _create(self, resource: Resource, created: list[Resource], make: Callable[[], object]) -> None:
        """Record ``resource`` in the journal, then create it (so a crash never hides an object)."""
        self.journal.record(resource)
        created.append(resource)
        make()
        self.progress(f"created {resource.describe()}")
        failpoint("provision.created")

    def _ensure_network(self, created: list[Resource]) -> None:
        c = self.cluster
        network = lookup(self.conn.networkLookupByName, c.network)
        if network is None:
            resource = Resource("network", c.network)
            self._create(resource, created, lambda: self.conn.networkDefineXML(network_xml(c)))
            network = self.conn.networkLookupByName(c.network)
        if not network.isActive():
            network.create()
        self._add_missing_leases(network)

    def _add_missing_leases(self, network: Any) -> None:
        """VMs added to the config since the network was created get their static lease (live + saved)."""
        lv = self.libvirt
        known = {h.get("mac") for h in ET.fromstring(network.XMLDesc()).iter("host")}
        for vm in self.cluster.vms:
            if vm.mac in known:
                continue
            host = ET.Element("host", mac=vm.mac, name=vm.name, ip=str(vm.ip_address))
            network.update(
                lv.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                lv.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                ET.tostring(host, encoding="unicode"),
                lv.VIR_NETWORK_UPDATE_AFFECT_LIVE | lv.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
            )
            self.progress(f"added the DHCP lease {vm.ip_address} for {vm.name} to {self.cluster.network}")

    def _ensure_pool(self, created: list[Resource]) -> None:
        c = self.cluster
        pool = lookup(self.conn.storagePoolLookupByName, c.pool)
        if pool is None:

            def make() -> None:
                defined = self.conn.storagePoolDefineXML(pool_xml(c))
                if not is_test_uri(self.uri):
                    defined.build(0)  # creates the folder (fine when it exists)

            self._create(Resource("pool", c.pool), created, make)
            pool = self.conn.storagePoolLookupByName(c.pool)
        if not pool.isActive():
            pool.create()

    def _upload(self, volume: Any, path: Path) -> None:
        """Stream a local file into a volume (libvirt writes it, so the pool's owner and modes stay)."""
        if is_test_uri(self.uri):
            return  # the test driver keeps no volume contents
        size = path.stat().st_size
        stream = self.conn.newStream(0)
        volume.upload(stream, 0, size, 0)
        with path.open("rb") as handle:
            stream.sendAll(lambda _stream, nbytes, fh: fh.read(nbytes), handle)
        stream.finish()

    def _base_volume_name(self) -> str:
        """The pool's copy of the base image, named by the image file's identity (path, size, mtime):
        a rebuilt image is copied anew and never swapped under existing overlays."""
        info = self.cluster.base_image.stat()
        key = f"{self.cluster.base_image}|{info.st_size}|{info.st_mtime_ns}"
        return f"base-{hashlib.sha256(key.encode()).hexdigest()[:12]}.qcow2"

    def _ensure_base(self, created: list[Resource]) -> str:
        """Copy the base image into the pool once (QEMU then reads only pool files); its path."""
        c = self.cluster
        pool = self.conn.storagePoolLookupByName(c.pool)
        name = self._base_volume_name()
        volume = lookup(pool.storageVolLookupByName, name)
        if volume is None:
            size = c.base_image.stat().st_size

            def make() -> None:
                self.progress(
                    f"copying the base image {c.base_image} ({size / 1024**2:.0f} MiB) into {c.pool}"
                )
                self._upload(pool.createXML(raw_volume_xml(name, size), 0), c.base_image)

            self._create(Resource("volume", name, pool=c.pool), created, make)
            volume = pool.storageVolLookupByName(name)
        return str(volume.path())

    def _ensure_vm(
        self, vm: VMDefinition, public_key: str, backing: str, virt_type: VirtType, created: list[Resource]
    ) -> None:
        c = self.cluster
        pool = self.conn.storagePoolLookupByName(c.pool)
        if lookup(pool.storageVolLookupByName, vm.volume) is None:
            self._create(
                Resource("volume", vm.volume, pool=c.pool),
                created,
                lambda: pool.createXML(overlay_volume_xml(vm, backing), 0),
            )
        if lookup(pool.storageVolLookupByName, vm.seed_volume) is None:
            self._create(
                Resource("volume", vm.seed_volume, pool=c.pool),
                created,
                lambda: self._write_seed(pool, vm, public_key),
            )
        if self._domain(vm.name) is None:
            self._create(
                Resource("domain", vm.name),
                created,
                lambda: self.conn.defineXML(domain_xml(c, vm, virt_type=virt_type)),
            )

    def _write_seed(self, pool: Any, vm: VMDefinition, public_key: str) -> None:
        c = self.cluster
        with tempfile.TemporaryDirectory(prefix="ai-how-seed-") as tmp:
            iso = Path(tmp) / vm.seed_volume
            cloudinit.write_seed_iso(
                iso,
                user=cloudinit.user_data(hostname=vm.name, ssh_public_keys=[public_key]),
                meta=cloudinit.meta_data(instance_id=f"{vm.name}-{uuid.uuid4()}", hostname=vm.name),
                network=cloudinit.network_config(vm.mac),
                log_path=c.log_dir / "seed.log",
            )
            volume = pool.createXML(raw_volume_xml(vm.seed_volume, iso.stat().st_size), 0)
            self._upload(volume, iso)

    def _boot(self, vm: VMDefinition) -> bool:
        """Start the VM if it is not running (claiming its GPUs first); whether it was started now."""
        domain = self.conn.lookupByName(vm.name)
        if domain.isActive():
            return False
        addresses = [d.pci_address for d in vm.gpus]
        taken = gpu_owners.claim(self.store, self.cluster.side, vm.name, addresses, self._running)
        if taken is not None:
            raise AiHowError(
                f"GPU {taken.pci_address} of {self.cluster.side}/{vm.name} was taken meanwhile by the running "
                f"VM {taken.holder}",
                fix=f"stop the {taken.cluster} cluster first: `ai-how {taken.cluster} stop CONFIG`",
            )
        try:
            domain.create()
        except BaseException:
            gpu_owners.release(self.store, self.cluster.side, vm.name)
            raise
        self.progress(f"started {vm.name}" + (f" with GPU {', '.join(addresses)}" if addresses else ""))
        failpoint("provision.booted")
        return True

    def _wait(self, timeout_s: float) -> None:
        c = self.cluster
        if is_test_uri(self.uri):
            self.progress("test driver: no guest to reach over SSH; not waiting")
            return
        deadline = time.monotonic() + timeout_s
        for vm in c.vms:
            self.progress(f"{vm.name}: waiting for SSH on {vm.ip_address}")
            waited = wait_for_node(
                vm.name,
                vm.ip_address,
                key=c.ssh_key,
                known_hosts=c.known_hosts,
                deadline=deadline,
                log_path=c.log_dir / f"ssh-{vm.name}.log",
                progress=self.progress,
            )
            self.progress(f"{vm.name}: ready after {waited:.0f} s")

    def _rollback(self, created: list[Resource], booted: list[str]) -> None:
        for name in booted:  # VMs that existed before this start go back to shut off
            if Resource("domain", name) in created:
                continue
            domain = self._domain(name)
            if domain is not None and domain.isActive():
                with contextlib.suppress(self.libvirt.libvirtError):
                    domain.destroy()
            gpu_owners.release(self.store, self.cluster.side, name)
        for resource in reversed(created):
            try:
                self._remove(resource)
            except AiHowError as exc:  # keep going; the journal still names what is left
                self.progress(f"rollback: {exc.message}; `destroy` will retry it")

    # ------------------------------------------------------------------ removal
    def _remove(self, resource: Resource) -> None:
        """Remove one journaled object (absent ones are skipped), then drop it from the journal."""
        lv = self.libvirt
        try:
            if resource.kind == "domain":
                domain = self._domain(resource.name)
                if domain is not None:
                    if domain.isActive():
                        domain.destroy()
                    domain.undefineFlags(
                        lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    )
                gpu_owners.release(self.store, self.cluster.side, resource.name)
                self._forget_host_key(resource.name)
            elif resource.kind == "volume":
                pool = lookup(self.conn.storagePoolLookupByName, resource.pool or "")
                volume = lookup(pool.storageVolLookupByName, resource.name) if pool is not None else None
                if volume is not None:
                    volume.delete(0)
            elif resource.kind == "pool":
                self._keep_console_logs()
                pool = lookup(self.conn.storagePoolLookupByName, resource.name)
                if pool is not None:
                    if pool.isActive():
                        pool.destroy()
                    if not is_test_uri(self.uri):
                        with contextlib.suppress(lv.libvirtError):  # a folder that is not empty stays
                            pool.delete(0)
                    pool.undefine()
            elif resource.kind == "network":
                network = lookup(self.conn.networkLookupByName, resource.name)
                if network is not None:
                    if network.isActive():
                        network.destroy()
                    network.undefine()
        except (lv.libvirtError, OSError) as exc:
            reason = exc.get_error_message() if isinstance(exc, lv.libvirtError) else str(exc)
            raise AiHowError(
                f"could not remove {resource.describe()}: {reason}",
                fix="fix the cause and run `destroy` again (the journal still lists what is left)",
            ) from None
        self.journal.forget(resource)
        self.progress(f"removed {resource.describe()}")

    def _forget_host_key(self, vm_name: str) -> None:
        """A removed VM's host key leaves known_hosts: the next VM at that address has a new one."""
        vm = next((v for v in self.cluster.vms if v.name == vm_name), None)
        known = self.cluster.known_hosts
        if vm is None or not known.is_file():
            return
        run_logged(
            ["ssh-keygen", "-R", str(vm.ip_address), "-f", str(known)],
            log_path=self.cluster.log_dir / "ssh-keygen.log",
            timeout_s=30,
        )

    def _keep_console_logs(self) -> None:
        """A copy of each VM's serial console log in the cluster's logs, for post-mortems (best effort)."""
        for vm in self.cluster.vms:
            target = self.cluster.log_dir / vm.console_log.name
            if vm.console_log.is_file() and vm.console_log != target:
                try:
                    self.cluster.log_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(vm.console_log, target)
                except OSError as exc:
                    self.progress(f"could not keep {vm.console_log}: {exc.strerror}")

    def destroy(self) -> list[Resource]:
        """Remove everything the journal names, newest first; returns what was removed."""
        entries = self.journal.entries()
        for resource in reversed(entries):
            self._remove(resource)
        gpu_owners.release(self.store, self.cluster.side)
        self.cluster.known_hosts.unlink(missing_ok=True)  # new VMs bring new host keys
        return entries

    # ------------------------------------------------------------------ stop / status
    def stop(self, *, timeout_s: float = 120) -> list[str]:
        """Shut every running VM down through ACPI; after ``timeout_s`` force off the ones still up."""
        running = [
            d for vm in self.cluster.vms if (d := self._our_domain(vm.name)) is not None and d.isActive()
        ]
        for domain in running:
            self.progress(f"shutting down {domain.name()}")
            with contextlib.suppress(self.libvirt.libvirtError):
                domain.shutdown()
        deadline = time.monotonic() + timeout_s
        while any(d.isActive() for d in running) and time.monotonic() < deadline:
            time.sleep(1)
        for domain in running:
            if domain.isActive():
                self.progress(f"{domain.name()} did not shut down within {timeout_s:.0f} s; forcing it off")
                with contextlib.suppress(self.libvirt.libvirtError):
                    domain.destroy()
            gpu_owners.release(self.store, self.cluster.side, domain.name())
        return [d.name() for d in running]

    def status(self) -> list[VMStatus]:
        """Each VM as libvirt defines it (vCPUs, RAM and PCI devices from the domain, which may predate a
        config edit), or as the config asks while it is not created."""
        rows = []
        for vm in self.cluster.vms:
            domain = self._our_domain(vm.name)
            row = VMStatus(
                name=vm.name,
                role=vm.role,
                state="not created" if domain is None else _STATES.get(domain.state()[0], "unknown"),
                ip_address=str(vm.ip_address),
                cpu_cores=vm.cpu_cores,
                memory_gb=vm.memory_mib / 1024,
                disk_gb=vm.disk_gb,
                gpus=[d.label or d.pci_address for d in vm.gpus],
            )
            if domain is not None:
                self._as_defined(row, vm, ET.fromstring(domain.XMLDesc()))
            rows.append(row)
        return rows

    @staticmethod
    def _as_defined(row: VMStatus, vm: VMDefinition, xml: ET.Element) -> None:
        row.cpu_cores = int(xml.findtext("vcpu") or row.cpu_cores)
        memory = xml.find("memory")
        if memory is not None and memory.text and memory.get("unit", "KiB") == "KiB":
            row.memory_gb = int(memory.text) / 1024**2
        labels = {d.pci_address: d.label or d.pci_address for d in vm.gpus}
        row.gpus = []
        for address in xml.iterfind("devices/hostdev[@type='pci']/source/address"):
            pci = "{:04x}:{:02x}:{:02x}.{:x}".format(
                *(int(address.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function"))
            )
            if pci in labels:
                row.gpus.append(labels[pci])

    def dry_run(self, *, virt_type: VirtType) -> str:
        """The XML ``start`` would define, in order: network, pool, then each VM's volume and domain."""
        c = self.cluster
        parts = [f"<!-- network {c.network} -->\n{network_xml(c)}", f"<!-- pool {c.pool} -->\n{pool_xml(c)}"]
        for vm in c.vms:
            backing = str(c.pool_dir / "base-<image id>.qcow2")
            parts.append(f"<!-- volume {vm.volume} -->\n{overlay_volume_xml(vm, backing)}")
            parts.append(f"<!-- domain {vm.name} -->\n{domain_xml(c, vm, virt_type=virt_type)}")
        return "\n".join(parts)
