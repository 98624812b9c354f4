"""Which VM owns each passed-through GPU, kept in the state store (``gpu_owners`` in ``state``).

A GPU is claimed when its VM starts and released when the VM stops or is destroyed. A claim whose
VM is no longer running (a crash, a host reboot) is stale and does not block anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ai_how.config.topology import ClusterSide
from ai_how.state.store import StateStore


@dataclass(frozen=True)
class Owner:
    pci_address: str
    cluster: str
    vm: str

    @property
    def holder(self) -> str:
        return f"{self.cluster}/{self.vm}"


def owners(store: StateStore) -> list[Owner]:
    table = store.read().get("gpu_owners", {})
    return [Owner(address, entry["cluster"], entry["vm"]) for address, entry in sorted(table.items())]


def conflicts(
    store: StateStore,
    side: ClusterSide,
    wanted: Iterable[tuple[str, str]],
    running: Callable[[Owner], bool],
) -> list[tuple[str, str, Owner]]:
    """``(vm, pci_address, owner)`` for each GPU of ``wanted`` (vm, address) held by a running VM of
    another cluster."""
    by_address = {o.pci_address: o for o in owners(store)}
    found = []
    for vm, address in wanted:
        owner = by_address.get(address)
        if owner is not None and owner.cluster != side and running(owner):
            found.append((vm, address, owner))
    return found


def claim(
    store: StateStore,
    side: ClusterSide,
    vm: str,
    addresses: Iterable[str],
    running: Callable[[Owner], bool],
) -> Owner | None:
    """Claim ``addresses`` for ``vm`` in one locked transaction; the other running owner if one holds
    any of them (then nothing is claimed). A claim of a VM that no longer runs is taken over."""
    with store.transaction() as doc:
        table = doc.setdefault("gpu_owners", {})
        wanted = list(addresses)
        for address in wanted:
            entry = table.get(address)
            if entry is None or (entry["cluster"], entry["vm"]) == (side, vm):
                continue
            owner = Owner(address, entry["cluster"], entry["vm"])
            if running(owner):
                return owner
        for address in wanted:
            table[address] = {"cluster": side, "vm": vm}
    return None


def release(store: StateStore, side: ClusterSide, vm: str | None = None) -> None:
    """Drop the claims of one VM (or of every VM of the cluster side)."""
    with store.transaction() as doc:
        table = doc.get("gpu_owners", {})
        for address, entry in list(table.items()):
            if entry["cluster"] == side and (vm is None or entry["vm"] == vm):
                del table[address]
