"""The sha256 manifest of a sync target: what it lists, how it is built from a directory, and why an
entry read from a store is refused (absolute, ``..``, backslash, empty, duplicate, bad hash or size).

A manifest read from a store is untrusted input: every entry is checked before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_how.objectstore.base import ObjectStoreError, dir_prefix, sha256_stream


def object_key(prefix: str, rel: str) -> str:
    """The key of ``rel`` inside the target directory ``prefix``."""
    return f"{dir_prefix(prefix)}{rel}"


MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_SHA256_HEX = frozenset("0123456789abcdef")
UNTRUSTED_FIX = (
    "the manifest was not written by ai-how or was altered: re-sync the version from its source "
    "(`ai-how sync SRC DEST` or `ai-how pipeline run --resume RUN`)"
)


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str
    size: int


def unsafe_path_reason(path: object) -> str | None:
    """Why ``path`` is not a safe relative POSIX path inside a target, or None when it is."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if "\\" in path:
        return "backslash in path"
    if "\x00" in path:
        return "NUL byte in path"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "'..' segment"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' segment"
    if path == MANIFEST:
        return f"the manifest cannot list itself ({MANIFEST})"
    return None


def _check_entry(raw: Any, seen: set[str], where: str) -> ManifestEntry:
    """One manifest entry, validated as untrusted input."""
    if not isinstance(raw, dict):
        raise ObjectStoreError(f"manifest at {where}: entry {raw!r} is not an object", fix=UNTRUSTED_FIX)
    path = raw.get("path")
    reason = unsafe_path_reason(path)
    if reason is None and path in seen:
        reason = "duplicate entry"
    if reason is not None or not isinstance(path, str):
        raise ObjectStoreError(
            f"manifest at {where}: entry {path!r} is refused ({reason})", fix=UNTRUSTED_FIX
        )
    sha, size = raw.get("sha256"), raw.get("size")
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256_HEX):
        raise ObjectStoreError(
            f"manifest at {where}: entry {path!r} has no valid sha256 (64 lowercase hex digits)",
            fix=UNTRUSTED_FIX,
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ObjectStoreError(
            f"manifest at {where}: entry {path!r} has no valid size (an integer >= 0)", fix=UNTRUSTED_FIX
        )
    seen.add(path)
    return ManifestEntry(path, sha, size)


def source_files(root: Path) -> Iterable[tuple[str, Path, int]]:
    """(relative POSIX path, path, size) of every regular file under ``root``; links and special files refused."""
    pending = [("", os.fspath(root))]
    while pending:
        rel_dir, directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {directory} in the sync source: {exc.strerror}") from None
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            mode = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(mode.st_mode):
                raise ObjectStoreError(
                    f"sync source {root} contains a symlink: {rel}",
                    fix="replace the link with the file or directory it points to (a synced target holds "
                    "regular files only)",
                )
            if stat.S_ISDIR(mode.st_mode):
                pending.append((f"{rel}/", entry.path))
                continue
            if not stat.S_ISREG(mode.st_mode):
                raise ObjectStoreError(
                    f"sync source {root} contains {rel}, which is not a regular file",
                    fix="remove it from the source directory",
                )
            reason = unsafe_path_reason(rel)
            if reason is not None and rel != MANIFEST:
                raise ObjectStoreError(
                    f"sync source {root}: {rel!r} cannot be synced ({reason})", fix="rename the file"
                )
            yield rel, Path(entry.path), mode.st_size


@dataclass
class Manifest:
    files: dict[str, ManifestEntry]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_directory(cls, root: Path, meta: dict[str, Any] | None = None) -> Manifest:
        """Hash every regular file under ``root`` (a symlink or special file is refused)."""
        files = {}
        for rel, path, _size in sorted(source_files(root)):
            if rel != MANIFEST:
                with path.open("rb") as stream:
                    digest, size = sha256_stream(stream)
                files[rel] = ManifestEntry(rel, digest, size)
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
        """Parse a manifest as untrusted input: unsafe, empty or duplicate paths are refused."""
        try:
            data = json.loads(raw)
            items, meta = data["files"], data.get("meta", {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ObjectStoreError(f"manifest at {where} is unreadable ({exc})", fix=UNTRUSTED_FIX) from None
        if not isinstance(items, list) or not isinstance(meta, dict):
            raise ObjectStoreError(f"manifest at {where} is unreadable (no list of files)", fix=UNTRUSTED_FIX)
        seen: set[str] = set()
        entries = [_check_entry(item, seen, where) for item in items]
        return cls({e.path: e for e in entries}, meta)

    @property
    def digest(self) -> str:

        return hashlib.sha256(
            "".join(f"{e.path}:{e.sha256}\n" for e in self.files.values()).encode()
        ).hexdigest()
