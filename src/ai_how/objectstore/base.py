"""Object-store interface, URIs and the backend registry (file://, s3://)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlparse

from ai_how.errors import AiHowError

if TYPE_CHECKING:
    from ai_how.config.models import ObjectStore as ObjectStoreConfig

CHUNK = 1024 * 1024
SIDECAR = ".ai-how-meta"  # the file:// store's metadata directory, at its root


class ObjectStoreError(AiHowError):
    """A store operation failed (unreachable endpoint, bad credentials, missing bucket, ...)."""


class SourceChangedError(ObjectStoreError):
    """A source file's bytes no longer hash to its manifest entry (it changed during the sync); not retried."""

    @classmethod
    def of(cls, path: Path) -> SourceChangedError:
        return cls(
            f"{path} changed while it was being synced (its sha256 no longer matches the one compared)",
            fix="sync again once nothing writes to the source directory",
        )


def dir_prefix(prefix: str) -> str:
    """``prefix`` as a directory boundary: ``"a/b"`` -> ``"a/b/"`` (``""`` stays the store root)."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: stream.read(CHUNK), b""):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None  # as recorded at upload (metadata); None if the object carries none (or not listed)
    etag: str | None = None  # the store's entity tag, unquoted; None where the store has none


@dataclass(frozen=True)
class PutResult:
    """What a store reports about an object it just wrote."""

    sha256: str  # of the bytes sent, hashed as they were read
    size: int  # bytes sent
    etag: str | None = None
    checksum_sha256: str | None = None  # the SHA-256 checksum the server returned (base64, "-N" if multipart)
    confirmed: bool = False  # the server confirmed the stored bytes hash to what was sent


class ObjectStore(Protocol):
    """A flat key space (one bucket or one directory); ``list`` treats its prefix as a directory."""

    url: str
    default_workers: int  # files a sync sends in parallel unless told otherwise

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> PutResult:
        """Store ``path`` at ``key``; refuse bytes that do not hash to ``sha256`` (None: not known yet)."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def open(self, key: str) -> BinaryIO: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class StoreURI:
    """``file:///abs/dir/prefix`` or ``s3://bucket/prefix``."""

    scheme: str
    bucket: str  # the directory for file://
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> StoreURI:
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            path = Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)
            if not path.is_absolute():
                raise ObjectStoreError(f"file URI must be absolute: {uri}", fix="write file:///absolute/path")
            return cls("file", str(path), "")
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ObjectStoreError(f"s3 URI without a bucket: {uri}", fix="write s3://bucket/prefix")
            return cls("s3", parsed.netloc, parsed.path.strip("/"))
        if not parsed.scheme:
            return cls.parse(Path(uri).expanduser().resolve().as_uri())
        raise ObjectStoreError(f"unsupported store URI {uri}", fix="use file:///dir or s3://bucket/prefix")

    def scoped(self) -> StoreURI:
        """For ``file://``: split the directory into store root + prefix, like ``s3://bucket/prefix``.

        The root is the nearest enclosing directory that already holds a store (its sidecar
        directory), else the parent directory; a directory that is itself a store root keeps an
        empty prefix. ``s3://`` URIs are returned unchanged.
        """
        if self.scheme != "file":
            return self
        path = Path(self.bucket, self.prefix)
        for root in (path, *path.parents):
            if (root / SIDECAR).is_dir():
                rel = path.relative_to(root).as_posix()
                return StoreURI("file", str(root), "" if rel == "." else rel)
        if path.parent == path:
            return StoreURI("file", str(path), "")
        return StoreURI("file", str(path.parent), path.name)

    def join(self, *parts: str) -> StoreURI:
        prefix = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return StoreURI(self.scheme, self.bucket, prefix)

    def __str__(self) -> str:
        if self.scheme == "file":
            return Path(self.bucket, self.prefix).as_uri() if self.prefix else Path(self.bucket).as_uri()
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


BackendFactory = Callable[[StoreURI, "ObjectStoreConfig | None"], ObjectStore]


def _file_backend(uri: StoreURI, config: ObjectStoreConfig | None) -> ObjectStore:
    from ai_how.objectstore.filestore import FileStore

    return FileStore(Path(uri.bucket))


def _s3_backend(uri: StoreURI, config: ObjectStoreConfig | None) -> ObjectStore:
    from ai_how.objectstore.s3store import S3Store

    return S3Store(uri.bucket, config)


# The one registry of object-store backends, keyed by URI scheme; imports are lazy.
BACKENDS: dict[str, BackendFactory] = {"file": _file_backend, "s3": _s3_backend}


def open_store(uri: str | StoreURI, config: ObjectStoreConfig | None = None) -> tuple[ObjectStore, str]:
    """The store for ``uri`` and the key prefix inside it."""
    parsed = uri if isinstance(uri, StoreURI) else StoreURI.parse(uri)
    factory = BACKENDS.get(parsed.scheme)
    if factory is None:
        raise ObjectStoreError(
            f"no object-store backend for {parsed.scheme}://", fix=f"use one of {sorted(BACKENDS)}"
        )
    return factory(parsed, config), parsed.prefix
