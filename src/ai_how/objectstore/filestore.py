"""``file://`` backend: a directory that persists, written atomically; sha256 kept in a sidecar."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ai_how.fsutil import atomic_write
from ai_how.objectstore.base import ObjectInfo, ObjectStoreError

_META = ".ai-how-meta"  # sidecar directory: <root>/.ai-how-meta/<key>.json holds {"sha256", "size"}


class FileStore:
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

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        target = self._path(key)
        try:
            with path.open("rb") as source:
                atomic_write(target, lambda out: shutil.copyfileobj(source, out, 1024 * 1024))
            meta = json.dumps({"sha256": sha256, "size": path.stat().st_size}).encode()
            atomic_write(self._meta_path(key), lambda out: out.write(meta))
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {target}: {exc.strerror}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        import hashlib

        target = self._path(key)
        atomic_write(target, lambda out: out.write(data))
        meta = json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}).encode()
        atomic_write(self._meta_path(key), lambda out: out.write(meta))

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
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(_META + "/") and not path.name.startswith("."):
                info = self.head(rel)
                if info is not None:
                    yield info

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)
