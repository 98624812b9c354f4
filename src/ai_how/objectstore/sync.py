"""Checksum-verified, resumable directory → object-store sync with a sha256 manifest.

Per sync target (one model version) the store holds the files plus ``manifest.json``
(path → sha256, size), written last: a target with a manifest is complete.
Files are compared by content (sha256), never by ETag or mtime. Every upload is
verified by reading the object back and hashing it. Progress is recorded in a
local sync-state file after each verified file, so an interrupted sync resumes
without re-sending what was already verified.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_how.failpoints import failpoint
from ai_how.fsutil import atomic_write_text
from ai_how.objectstore.base import ObjectStore, ObjectStoreError, sha256_file, sha256_stream

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str
    size: int


@dataclass
class Manifest:
    files: dict[str, ManifestEntry]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_directory(cls, root: Path, meta: dict[str, Any] | None = None) -> Manifest:
        files = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST:
                continue
            files[rel] = ManifestEntry(rel, sha256_file(path), path.stat().st_size)
        return cls(files, meta or {})

    def to_bytes(self) -> bytes:
        data = {
            "format": MANIFEST_FORMAT,
            "meta": self.meta,
            "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in self.files.values()],
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        try:
            data = json.loads(raw)
            files = {f["path"]: ManifestEntry(f["path"], f["sha256"], int(f["size"])) for f in data["files"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ObjectStoreError(f"manifest at {where} is unreadable ({exc})") from None
        return cls(files, data.get("meta", {}))

    @property
    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(
            "".join(f"{e.path}:{e.sha256}\n" for e in self.files.values()).encode()
        ).hexdigest()


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    manifest_digest: str = ""
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "bytes_uploaded": self.bytes_uploaded,
            "manifest_digest": self.manifest_digest,
            "duration_s": round(self.duration_s, 3),
        }


def _key(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def retry(action: Callable[[], Any], what: str, attempts: int = 4, base_s: float = 0.5) -> Any:
    """Run ``action`` with exponential backoff and jitter; the last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ObjectStoreError as exc:
            if attempt == attempts or "credentials" in exc.message:
                raise
            time.sleep(base_s * 2 ** (attempt - 1) * (1 + random.random() / 2))
    raise AssertionError(what)  # pragma: no cover


def verify_object(store: ObjectStore, key: str, entry: ManifestEntry) -> str | None:
    """Read the object back and hash it. None when it matches, else what is wrong."""
    info = store.head(key)
    if info is None:
        return "missing"
    if info.size != entry.size:
        return f"size {info.size} != {entry.size}"
    with store.open(key) as stream:
        digest, size = sha256_stream(stream)
    if size != entry.size or digest != entry.sha256:
        return f"sha256 {digest[:12]}… != {entry.sha256[:12]}…"
    return None


class _SyncState:
    """Which files of a target are verified in the store; persisted after each file."""

    def __init__(self, path: Path | None, target: str) -> None:
        self.path, self.target = path, target
        self.verified: dict[str, str] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("target") == target:
                    self.verified = dict(data.get("verified", {}))
            except ValueError:
                self.verified = {}

    def mark(self, rel: str, sha: str) -> None:
        self.verified[rel] = sha
        if self.path is not None:
            atomic_write_text(
                self.path, json.dumps({"target": self.target, "verified": self.verified}, indent=1)
            )


def sync_directory(
    source: Path,
    store: ObjectStore,
    prefix: str,
    *,
    state_path: Path | None = None,
    meta: dict[str, Any] | None = None,
    workers: int = 8,
    on_file: Callable[[str, str], None] | None = None,
) -> SyncReport:
    """Make ``prefix`` in ``store`` an exact, verified copy of ``source``; return what was done."""
    if not source.is_dir():
        raise ObjectStoreError(f"sync source {source} is not a directory", fix="check the path")
    start = time.monotonic()
    manifest = Manifest.of_directory(source, meta)
    if not manifest.files:
        raise ObjectStoreError(f"sync source {source} is empty")
    target = f"{store.url}/{prefix}"
    state = _SyncState(state_path, target)
    report = SyncReport(manifest_digest=manifest.digest)

    def needs_upload(entry: ManifestEntry) -> bool:
        info = store.head(_key(prefix, entry.path))
        if info is None or info.size != entry.size:
            return True
        if state.verified.get(entry.path) == entry.sha256:
            return False  # verified by an earlier (interrupted) run of this sync
        # Same content already there (sha256 recorded at its upload) counts as unchanged; a full
        # read-back of every object is `ai-how pipeline verify`'s job.
        return info.sha256 != entry.sha256

    def upload(entry: ManifestEntry) -> str:
        key = _key(prefix, entry.path)
        if not retry(lambda: needs_upload(entry), f"head {key}"):
            return "skipped"

        def put_and_verify() -> None:
            store.put_file(key, source / entry.path, entry.sha256)
            problem = verify_object(store, key, entry)
            if problem is not None:
                raise ObjectStoreError(f"verification of {key} failed after upload: {problem}")

        retry(put_and_verify, f"upload {key}")
        return "uploaded"

    # The manifest is removed first so that an interrupted sync never looks complete.
    old = store.head(_key(prefix, MANIFEST))
    if old is not None:
        with store.open(_key(prefix, MANIFEST)) as stream:
            if Manifest.from_bytes(stream.read(), target).digest == manifest.digest and all(
                state.verified.get(rel) == e.sha256 for rel, e in manifest.files.items()
            ):
                report.skipped = sorted(manifest.files)
                report.duration_s = time.monotonic() - start
                return report
        store.delete(_key(prefix, MANIFEST))

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = {pool.submit(upload, entry): entry for entry in manifest.files.values()}
        for future in as_completed(futures):
            entry = futures[future]
            outcome = future.result()
            state.mark(entry.path, entry.sha256)
            if outcome == "uploaded":
                report.uploaded.append(entry.path)
                report.bytes_uploaded += entry.size
            else:
                report.skipped.append(entry.path)
            if on_file is not None:
                on_file(entry.path, outcome)
            failpoint("sync.file_done")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # stop at the first failure; queued files are not sent
        raise
    pool.shutdown()
    # Files in the target that are not in the manifest (from an older version) are removed.
    for info in list(store.list(prefix)):
        rel = info.key[len(prefix.strip("/")) + 1 :] if prefix.strip("/") else info.key
        if rel != MANIFEST and rel not in manifest.files:
            store.delete(info.key)
    retry(lambda: store.put_bytes(_key(prefix, MANIFEST), manifest.to_bytes()), "manifest")
    report.uploaded.sort()
    report.skipped.sort()
    report.duration_s = time.monotonic() - start
    return report


def read_manifest(store: ObjectStore, prefix: str) -> Manifest:
    key = _key(prefix, MANIFEST)
    if store.head(key) is None:
        raise ObjectStoreError(
            f"no {MANIFEST} at {store.url}/{prefix}: the sync of this version is missing or incomplete",
            fix="run `ai-how pipeline run --resume RUN` to finish the sync",
        )
    with store.open(key) as stream:
        return Manifest.from_bytes(stream.read(), f"{store.url}/{key}")


def verify_target(store: ObjectStore, prefix: str) -> tuple[Manifest, dict[str, str]]:
    """Check every manifest entry against the store: {path: problem} for each mismatch."""
    manifest = read_manifest(store, prefix)
    problems = {}
    for entry in manifest.files.values():
        problem = verify_object(store, _key(prefix, entry.path), entry)
        if problem is not None:
            problems[entry.path] = problem
    return manifest, problems


def download_verified(store: ObjectStore, prefix: str, dest: Path) -> Manifest:
    """Download a synced target into ``dest``, verifying every file against the manifest."""
    manifest = read_manifest(store, prefix)
    dest.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files.values():
        target = dest / entry.path
        if target.exists() and target.stat().st_size == entry.size and sha256_file(target) == entry.sha256:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        with store.open(_key(prefix, entry.path)) as stream, tmp.open("wb") as out:
            while block := stream.read(1024 * 1024):
                out.write(block)
        digest = sha256_file(tmp)
        if digest != entry.sha256:
            tmp.unlink(missing_ok=True)
            raise ObjectStoreError(
                f"{entry.path} in {store.url}/{prefix} is corrupt: sha256 {digest[:16]}… does not match "
                f"the manifest's {entry.sha256[:16]}…",
                fix="re-sync this model version (`ai-how sync` or `ai-how pipeline run --resume RUN`)",
            )
        tmp.replace(target)
    return manifest
