"""Reading a synced target back: its manifest, a full sha256 check of every object, and downloads that
write nothing outside their destination and keep a file only once its sha256 matched."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import BinaryIO

from ai_how.fsutil import atomic_write
from ai_how.objectstore.base import CHUNK, ObjectStore, ObjectStoreError, sha256_file, sha256_stream
from ai_how.objectstore.manifest import (
    MANIFEST,
    UNTRUSTED_FIX,
    Manifest,
    ManifestEntry,
    object_key,
    unsafe_path_reason,
)


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


def remote_manifest(store: ObjectStore, prefix: str) -> Manifest | None:
    """The target's current manifest; None when absent or unusable (it is about to be replaced)."""
    key = object_key(prefix, MANIFEST)
    if store.head(key) is None:
        return None
    try:
        with store.open(key) as stream:
            return Manifest.from_bytes(stream.read(), f"{store.url}/{key}")
    except ObjectStoreError:
        return None


def read_manifest(store: ObjectStore, prefix: str) -> Manifest:
    key = object_key(prefix, MANIFEST)
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
        problem = verify_object(store, object_key(prefix, entry.path), entry)
        if problem is not None:
            problems[entry.path] = problem
    return manifest, problems


def _inside(dest: Path, rel: str, where: str) -> Path:
    """``dest/rel``, refused unless it stays inside ``dest`` (resolved) once symlinks are resolved."""
    reason = unsafe_path_reason(rel)
    target = dest / rel
    parent = target.parent.resolve()
    if reason is None and parent != dest and dest not in parent.parents:
        reason = "it leads outside the destination"
    if reason is not None:
        raise ObjectStoreError(f"manifest at {where}: entry {rel!r} is refused ({reason})", fix=UNTRUSTED_FIX)
    return target


def _matches(path: Path, entry: ManifestEntry) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and sha256_file(path) == entry.sha256


def download_verified(store: ObjectStore, prefix: str, dest: Path) -> Manifest:
    """Download a synced target into ``dest``, verifying every file against the manifest.

    Nothing is ever written outside ``dest``; each file appears atomically (a uniquely named
    temporary file beside it, removed on failure) and only once its sha256 matched.
    """
    manifest = read_manifest(store, prefix)
    where = f"{store.url}/{object_key(prefix, MANIFEST)}"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    targets = {rel: _inside(root, rel, where) for rel in manifest.files}  # all checked before any write
    for entry in manifest.files.values():
        target = targets[entry.path]
        if not target.is_symlink() and _matches(target, entry):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _inside(root, entry.path, where)  # again, now that its directories exist
        with store.open(object_key(prefix, entry.path)) as stream:
            # A symlink at the target is replaced (rename does not follow it), never written through.
            atomic_write(
                target, functools.partial(_copy_checked, stream, entry=entry, where=f"{store.url}/{prefix}")
            )
    return manifest


def _copy_checked(stream: BinaryIO, out: BinaryIO, *, entry: ManifestEntry, where: str) -> None:
    """Copy ``stream`` into ``out``, hashing it; raise (so nothing is kept) unless it matches ``entry``."""
    import hashlib

    digest, size = hashlib.sha256(), 0
    while block := stream.read(CHUNK):
        digest.update(block)
        size += len(block)
        out.write(block)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise ObjectStoreError(
            f"{entry.path} in {where} is corrupt: sha256 {digest.hexdigest()[:16]}… does not match "
            f"the manifest's {entry.sha256[:16]}…",
            fix="re-sync this model version (`ai-how sync` or `ai-how pipeline run --resume RUN`)",
        )
