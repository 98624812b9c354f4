"""What ai-how created in libvirt for a cluster, recorded in the state store *before* each creation.

An entry is written before the object is created, so after any crash the journal holds at least
everything that exists; rollback and ``destroy`` walk it backwards and remove only what it names
(an entry whose object never came to be is skipped). Nothing outside the journal is ever touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ai_how.config.topology import ClusterSide
from ai_how.state.store import StateStore

ResourceKind = Literal["network", "pool", "volume", "domain"]


@dataclass(frozen=True)
class Resource:
    kind: ResourceKind
    name: str  # network, pool, volume or domain name
    pool: str | None = None  # the pool of a volume

    def describe(self) -> str:
        where = f" in pool {self.pool}" if self.pool else ""
        return f"{self.kind} {self.name}{where}"


class Journal:
    """The created-objects list of one cluster side in the ``state`` document."""

    def __init__(self, store: StateStore, side: ClusterSide) -> None:
        self.store = store
        self.side = side

    def _cluster(self, doc: dict[str, Any]) -> dict[str, Any]:
        clusters: dict[str, Any] = doc.setdefault("clusters", {})
        entry: dict[str, Any] = clusters.setdefault(self.side, {})
        entry.setdefault("created", [])
        return entry

    def entries(self) -> list[Resource]:
        cluster = self.store.read().get("clusters", {}).get(self.side, {})
        return [Resource(**item) for item in cluster.get("created", [])]

    def info(self) -> dict[str, Any]:
        """What was recorded about the cluster besides the journal (name, URI, config path)."""
        cluster = self.store.read().get("clusters", {}).get(self.side, {})
        return {k: v for k, v in cluster.items() if k != "created"}

    def has(self, resource: Resource) -> bool:
        return resource in self.entries()

    def record(self, resource: Resource) -> None:
        with self.store.transaction() as doc:
            created = self._cluster(doc)["created"]
            if asdict(resource) not in created:
                created.append(asdict(resource))

    def forget(self, resource: Resource) -> None:
        with self.store.transaction() as doc:
            cluster = self._cluster(doc)
            cluster["created"] = [item for item in cluster["created"] if item != asdict(resource)]
            if not cluster["created"]:
                doc["clusters"].pop(self.side, None)

    def describe_cluster(self, **fields: Any) -> None:
        """Record the cluster's name, URI and config beside its journal."""
        with self.store.transaction() as doc:
            self._cluster(doc).update(fields)
