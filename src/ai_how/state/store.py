"""The one state store: versioned JSON documents under the state directory.

Layout (``--state-dir``, default ``$AI_HOW_STATE_DIR`` or ``~/.ai-how``)::

    state.json            clusters, GPU ownership  (document "state")
    runs/<run-id>.json    pipeline runs            (document "runs/<run-id>")
    locks/<doc>.lock      one lock file per document

Every write is atomic (temp file in the same directory, fsync, rename, fsync of
the directory) and happens under an exclusive ``flock`` held for the whole
read-modify-write, so concurrent writers in several processes lose nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ai_how.errors import StateError
from ai_how.fsutil import atomic_write_text

FORMAT_VERSION = 1
_DOC_NAME = re.compile(r"^[a-z][a-z0-9_-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def default_state_dir() -> Path:
    env = os.environ.get("AI_HOW_STATE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".ai-how"


class StateStore:
    """Versioned JSON documents with locked read-modify-write transactions."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_state_dir()).expanduser()

    # -- paths
    def _check(self, name: str) -> str:
        if not _DOC_NAME.match(name):
            raise StateError(f"invalid state document name {name!r}")
        return name

    def path_of(self, name: str) -> Path:
        return self.root / f"{self._check(name)}.json"

    def _lock_path(self, name: str) -> Path:
        return self.root / "locks" / f"{self._check(name).replace('/', '__')}.lock"

    # -- locking
    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[None]:
        """Exclusive lock on one document, across processes (flock on a side file).

        With ``blocking=False`` a lock held elsewhere raises StateError at once.
        """
        lock_path = self._lock_path(name)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(
                f"cannot use the state directory {self.root}: {exc.strerror}",
                fix="pass a writable --state-dir or set AI_HOW_STATE_DIR",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"{name} is in use by another ai-how process") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- reading
    def _load(self, name: str) -> dict[str, Any]:
        path = self.path_of(name)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            envelope = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StateError(
                f"state file {path} is corrupt ({exc.msg} at line {exc.lineno})",
                fix=f"restore it from a backup or remove it (state in it is lost): rm {path}",
            ) from None
        if not isinstance(envelope, dict) or "format_version" not in envelope or "data" not in envelope:
            raise StateError(f"state file {path} is not an ai-how state document", fix=f"move {path} away")
        version = envelope["format_version"]
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise StateError(
                f"state file {path} has format version {version!r}; this ai-how reads up to {FORMAT_VERSION}",
                fix="upgrade ai-how",
            )
        data = envelope["data"]
        if not isinstance(data, dict):
            raise StateError(f"state file {path} holds no mapping", fix=f"move {path} away")
        return _migrate(data, version)

    def read(self, name: str = "state") -> dict[str, Any]:
        """A snapshot of one document (empty when it does not exist yet)."""
        with self.lock(name):
            return self._load(name)

    def exists(self, name: str) -> bool:
        return self.path_of(name).exists()

    def names(self, prefix: str) -> list[str]:
        """Names of the documents under ``prefix/`` (e.g. ``runs``), sorted."""
        folder = self.root / self._check(prefix)
        if not folder.is_dir():
            return []
        return sorted(f"{prefix}/{p.stem}" for p in folder.glob("*.json") if not p.name.startswith("."))

    # -- writing
    def _save(self, name: str, data: dict[str, Any]) -> None:
        envelope = {"format_version": FORMAT_VERSION, "data": data}
        atomic_write_text(
            self.path_of(name), json.dumps(envelope, indent=2, sort_keys=True, default=str) + "\n"
        )

    @contextlib.contextmanager
    def transaction(self, name: str = "state") -> Iterator[dict[str, Any]]:
        """Lock, load, let the caller mutate the dict, then write it atomically (not on exception)."""
        with self.lock(name):
            data = self._load(name)
            yield data
            self._save(name, data)

    def write(self, name: str, data: dict[str, Any]) -> None:
        with self.lock(name):
            self._save(name, data)


def _migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring a document written by an older format up to FORMAT_VERSION (none exist yet)."""
    return data
