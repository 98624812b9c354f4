"""``file://`` backend: a directory that persists, written atomically; sha256 kept in a sidecar."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ai_how.fsutil import atomic_write
from ai_how.objectstore.base import (
    CHUNK,
    SIDECAR,
    ObjectInfo,
    ObjectStoreError,
    PutResult,
    SourceChangedError,
    dir_prefix,
)

_META = SIDECAR  # sidecar directory: <root>/.ai-how-meta/<key>.json holds {"sha256", "size"}


def _is_temp(name: str) -> bool:
    """A temporary file of an atomic write in progress (``.<name>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


class FileStore:
    default_workers = 8

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ObjectStoreError(f"object key escapes the store: {key!r}")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / _META / f"{key}.json"

    def _write_meta(self, key: str, sha256: str, size: int) -> None:
        meta = json.dumps({"sha256": sha256, "size": size}).encode()
        atomic_write(self._meta_path(key), lambda out: out.write(meta))

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> PutResult:
        """Copy ``path`` to ``key``, hashing the bytes copied: a source that changed is refused, not stored."""
        target = self._path(key)
        digest, size = hashlib.sha256(), 0

        def copy(out: BinaryIO) -> None:
            nonlocal size
            with path.open("rb") as source:
                while block := source.read(CHUNK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise SourceChangedError.of(path)

        try:
            atomic_write(target, copy)
            self._write_meta(key, digest.hexdigest(), size)
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {target}: {exc.strerror}") from None
        # No server vouches for the bytes (confirmed=False): the caller reads them back.
        return PutResult(digest.hexdigest(), size)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        atomic_write(target, lambda out: out.write(data))
        self._write_meta(key, hashlib.sha256(data).hexdigest(), len(data))

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        sha = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            meta = json.loads(self._meta_path(key).read_text())
            if meta.get("size") == size:
                sha = meta.get("sha256")
        return ObjectInfo(key, size, sha)

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectStoreError(f"object {key} not found in {self.url}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under the directory ``prefix`` (``m/v1`` never lists ``m/v10/...``)."""
        start = dir_prefix(prefix)
        base = self.root / start if start else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            if here == self.root:
                dirnames[:] = [d for d in dirnames if d != _META]
            dirnames.sort()
            for name in sorted(filenames):
                if _is_temp(name):
                    continue
                rel = (here / name).relative_to(self.root).as_posix()
                if rel.startswith(start):
                    info = self.head(rel)
                    if info is not None:
                        yield info

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)
