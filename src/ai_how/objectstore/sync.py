"""Checksum-verified, resumable directory → object-store sync with a sha256 manifest.

Per sync target (one model version) the store holds the files plus ``manifest.json``
(path → sha256, size), written last: a target with a manifest is complete.
Files are compared by content (sha256), never by mtime. Every upload is verified: by the
server's SHA-256 checksum where the store confirms it on write, else by reading the object
back and hashing it. Progress is recorded in a local sync-state file (in batches, see
``_SyncState``), so an interrupted sync resumes without re-sending what was already verified.

A prefix is a directory: syncing ``m/v1`` never lists, touches or deletes ``m/v10/...``.
Objects under the prefix that are not in the source are removed only when asked (``delete``).
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_how.failpoints import failpoint
from ai_how.fsutil import atomic_write_text
from ai_how.objectstore.base import (
    ObjectInfo,
    ObjectStore,
    ObjectStoreError,
    PutResult,
    SourceChangedError,
    dir_prefix,
    sha256_stream,
)
from ai_how.objectstore.manifest import MANIFEST, Manifest, ManifestEntry, object_key, source_files
from ai_how.objectstore.verified import remote_manifest, verify_object


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # under the prefix but not in the source
    deleted: list[str] = field(default_factory=list)  # the stale objects removed (only with delete=True)
    bytes_uploaded: int = 0
    manifest_digest: str = ""
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "stale": self.stale,
            "deleted": self.deleted,
            "bytes_uploaded": self.bytes_uploaded,
            "manifest_digest": self.manifest_digest,
            "duration_s": round(self.duration_s, 3),
        }


def retry(action: Callable[[], Any], what: str, attempts: int = 4, base_s: float = 0.5) -> Any:
    """Run ``action`` with exponential backoff and jitter; the last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except SourceChangedError:
            raise  # sending the same file again cannot help
        except ObjectStoreError as exc:
            if attempt == attempts or "credentials" in exc.message:
                raise
            time.sleep(base_s * 2 ** (attempt - 1) * (1 + random.random() / 2))
    raise AssertionError(what)  # pragma: no cover


class _SyncState:
    """Which files of a target are verified in the store, persisted in batches.

    Each record is {sha256, etag, checksum} as the store returned them at upload. The file is
    rewritten atomically: after each of the first files one by one, then once the unrecorded
    files reach 1/8 of those recorded (at most ``MAX_BATCH``), ``MAX_BYTES`` or ``MAX_AGE_S``,
    and always at the end or on failure. A crash loses at most that batch, which the next run
    checks again; a file is skipped only when its record matches AND the object is there with
    the same size (and entity tag, where the store has them).
    """

    ONE_BY_ONE = 8
    MAX_BATCH = 256
    MAX_BYTES = 64 * 1024 * 1024
    MAX_AGE_S = 2.0

    def __init__(self, path: Path | None, target: str) -> None:
        self.path, self.target = path, target
        self.verified: dict[str, dict[str, str | None]] = {}
        self._recorded = 0  # records on disk
        self._unflushed = 0  # marks since the last write (a re-marked path counts: its record changed)
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
            except (ValueError, OSError):
                data = {}
            if isinstance(data, dict) and data.get("target") == target:
                self.verified = self._records(data.get("verified"))
                self._recorded = len(self.verified)

    @staticmethod
    def _records(raw: Any) -> dict[str, dict[str, str | None]]:
        records: dict[str, dict[str, str | None]] = {}
        for rel, value in raw.items() if isinstance(raw, dict) else ():
            if isinstance(value, str):  # format of earlier versions: rel -> sha256
                records[rel] = {"sha256": value, "etag": None, "checksum": None}
            elif isinstance(value, dict) and isinstance(value.get("sha256"), str):
                records[rel] = {k: value.get(k) for k in ("sha256", "etag", "checksum")}
        return records

    def vouches(self, entry: ManifestEntry, info: ObjectInfo) -> bool:
        """This run or an earlier one verified ``entry``'s content at the object ``info`` describes."""
        record = self.verified.get(entry.path)
        if record is None or record["sha256"] != entry.sha256 or info.size != entry.size:
            return False
        return record["etag"] is None or info.etag is None or record["etag"] == info.etag

    def covers(self, manifest: Manifest) -> bool:
        return all(
            (r := self.verified.get(rel)) is not None and r["sha256"] == e.sha256
            for rel, e in manifest.files.items()
        )

    def mark(
        self, entry: ManifestEntry, etag: str | None, checksum: str | None, *, flush: bool = True
    ) -> None:
        self.verified[entry.path] = {"sha256": entry.sha256, "etag": etag, "checksum": checksum}
        self._unflushed += 1
        self._pending_bytes += entry.size
        if flush and self._due():
            self.flush()

    def _due(self) -> bool:
        pending = self._unflushed
        batch = 1 if self._recorded < self.ONE_BY_ONE else min(self.MAX_BATCH, self._recorded // 8)
        return (
            pending >= batch
            or self._pending_bytes >= self.MAX_BYTES
            or time.monotonic() - self._last_flush >= self.MAX_AGE_S
        )

    def flush(self) -> None:
        if self.path is None or not self._unflushed:
            return
        state = {"target": self.target, "verified": self.verified}
        atomic_write_text(self.path, json.dumps(state, separators=(",", ":")))
        self._recorded, self._unflushed, self._pending_bytes = len(self.verified), 0, 0
        self._last_flush = time.monotonic()


@dataclass
class _Item:
    """A source file on its way to the store; its entry is known once hashed (up front or by its upload)."""

    rel: str
    path: Path
    size: int
    entry: ManifestEntry | None = None

    def hashed(self) -> ManifestEntry:
        if self.entry is None:
            with self.path.open("rb") as stream:
                digest, self.size = sha256_stream(stream)
            self.entry = ManifestEntry(self.rel, digest, self.size)
        return self.entry


def _manifest(items: dict[str, _Item], meta: dict[str, Any] | None) -> Manifest:
    return Manifest({rel: item.hashed() for rel, item in sorted(items.items())}, meta or {})


@dataclass
class _Plan:
    """What a sync does with each file, decided from one listing of the target."""

    skip: dict[str, ObjectInfo] = field(default_factory=dict)  # verified already: no request
    check: list[_Item] = field(default_factory=list)  # same size, content unknown there: HEAD decides
    upload: list[_Item] = field(default_factory=list)  # not there, or other content


def _plan(
    items: dict[str, _Item], listing: dict[str, ObjectInfo], state: _SyncState, remote: Manifest | None
) -> _Plan:
    plan = _Plan()
    for rel, item in items.items():
        info = listing.get(rel)
        if info is None or info.size != item.size:
            plan.upload.append(item)  # hashed while it is sent
            continue
        entry = item.hashed()  # the same size is there: the content decides
        if state.vouches(entry, info):
            plan.skip[rel] = info
        elif remote is not None and remote.files.get(rel) == entry:
            plan.skip[rel] = info  # the previous complete sync of this target verified this content
        elif info.sha256 == entry.sha256:
            plan.skip[rel] = info  # the store recorded this content's sha256 at its upload
        elif info.sha256 is not None:
            plan.upload.append(item)
        else:
            plan.check.append(item)
    return plan


def _refuse_root_delete(store: ObjectStore, prefix: str) -> None:
    if not prefix.strip("/"):
        raise ObjectStoreError(
            f"refusing to delete stale objects at the root of {store.url}: every other target there would go",
            fix="sync into a prefix (s3://bucket/PREFIX, file:///dir/PREFIX) or leave out --delete",
        )


def _source_items(source: Path) -> dict[str, _Item]:
    if not source.is_dir():
        raise ObjectStoreError(f"sync source {source} is not a directory", fix="check the path")
    items = {rel: _Item(rel, path, size) for rel, path, size in source_files(source) if rel != MANIFEST}
    if not items:
        raise ObjectStoreError(f"sync source {source} is empty")
    return items


def _unchanged(items: dict[str, _Item], remote: Manifest | None) -> Manifest | None:
    """The source's manifest when it equals ``remote`` (sizes first, then content); else None."""
    if remote is None or set(items) != set(remote.files):
        return None
    if any(item.size != remote.files[rel].size for rel, item in items.items()):
        return None
    manifest = _manifest(items, remote.meta)
    return manifest if manifest.digest == remote.digest else None


def sync_directory(
    source: Path,
    store: ObjectStore,
    prefix: str,
    *,
    state_path: Path | None = None,
    meta: dict[str, Any] | None = None,
    workers: int | None = None,
    on_file: Callable[[str, str], None] | None = None,
    delete: bool = False,
) -> SyncReport:
    """Make the directory ``prefix`` in ``store`` a verified copy of ``source``; return what was done.

    Objects under ``prefix`` that are not in ``source`` are removed only with ``delete`` (never at
    the store root). ``on_file(path, outcome)`` sees "uploaded", "skipped" and, before a removal, "delete".
    Each file is read once where it must be sent anyway (hashed while it is sent).
    """
    if delete:
        _refuse_root_delete(store, prefix)
    start = time.monotonic()
    items = _source_items(source)
    base = dir_prefix(prefix)
    state = _SyncState(state_path, f"{store.url}/{base.rstrip('/')}")
    report = SyncReport()
    remote = remote_manifest(store, prefix)
    same = _unchanged(items, remote)
    if same is not None and not delete and state.covers(same):
        report.manifest_digest = same.digest
        return _finish(report, start, skipped=same.files)  # no-op: nothing listed, nothing sent

    listing = {info.key[len(base) :]: info for info in store.list(base) if info.key.startswith(base)}
    report.stale = sorted(rel for rel in listing if rel != MANIFEST and rel not in items)
    plan = _plan(items, listing, state, remote)
    for rel, info in plan.skip.items():
        entry = items[rel].hashed()
        if not state.vouches(entry, info):
            state.mark(entry, info.etag, None, flush=False)
        if on_file is not None:
            on_file(rel, "skipped")
    state.flush()
    complete = same is not None and not plan.check and not plan.upload  # manifest and objects match
    try:
        if not complete:
            if remote is not None or MANIFEST in listing:
                store.delete(object_key(prefix, MANIFEST))  # an interrupted sync must never look complete
            _transfer(store, prefix, plan, state, report, workers or store.default_workers, on_file)
        if delete:
            _delete_stale(store, prefix, report, on_file)
        manifest = _manifest(items, meta)
        if not complete:
            retry(lambda: store.put_bytes(object_key(prefix, MANIFEST), manifest.to_bytes()), "manifest")
    finally:
        state.flush()
    report.manifest_digest = manifest.digest
    return _finish(report, start, skipped=[*report.skipped, *plan.skip])


def _delete_stale(
    store: ObjectStore, prefix: str, report: SyncReport, on_file: Callable[[str, str], None] | None
) -> None:
    """Remove the objects under ``prefix`` that the source no longer has (listed before the sync began)."""
    for rel in report.stale:
        if on_file is not None:
            on_file(rel, "delete")
        key = object_key(prefix, rel)
        retry(functools.partial(store.delete, key), f"delete {key}")
        report.deleted.append(rel)


def _finish(report: SyncReport, start: float, *, skipped: Iterable[str]) -> SyncReport:
    report.skipped = sorted(skipped)
    report.uploaded.sort()
    report.duration_s = time.monotonic() - start
    return report


def _transfer(
    store: ObjectStore,
    prefix: str,
    plan: _Plan,
    state: _SyncState,
    report: SyncReport,
    workers: int,
    on_file: Callable[[str, str], None] | None,
) -> None:
    """Send what the plan says (HEAD first for the unknowns) in parallel; stop at the first failure."""

    def put_verified(item: _Item) -> PutResult:
        key = object_key(prefix, item.rel)
        result = store.put_file(key, item.path, item.entry.sha256 if item.entry else None)
        if not result.confirmed:  # no server checksum: read the object back
            problem = verify_object(store, key, ManifestEntry(item.rel, result.sha256, result.size))
            if problem is not None:
                raise ObjectStoreError(f"verification of {key} failed after upload: {problem}")
        return result

    def run(item: _Item, known: bool) -> tuple[str, PutResult]:
        key = object_key(prefix, item.rel)
        if not known:
            info = retry(lambda: store.head(key), f"head {key}")
            entry = item.hashed()
            if info is not None and info.size == entry.size and info.sha256 == entry.sha256:
                return "skipped", PutResult(entry.sha256, entry.size, info.etag)  # same content there
        return "uploaded", retry(lambda: put_verified(item), f"upload {key}")

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures: dict[Future[tuple[str, PutResult]], _Item] = {
            pool.submit(run, item, known): item
            for item, known in [*((i, False) for i in plan.check), *((i, True) for i in plan.upload)]
        }
        for future in as_completed(futures):
            item = futures[future]
            outcome, result = future.result()
            item.entry, item.size = ManifestEntry(item.rel, result.sha256, result.size), result.size
            state.mark(item.entry, result.etag, result.checksum_sha256)
            if outcome == "uploaded":
                report.uploaded.append(item.rel)
                report.bytes_uploaded += result.size
            else:
                report.skipped.append(item.rel)
            if on_file is not None:
                on_file(item.rel, outcome)
            failpoint("sync.file_done")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # stop at the first failure; queued files are not sent
        raise
    pool.shutdown()
