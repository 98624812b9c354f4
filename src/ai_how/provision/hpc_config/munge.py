"""The cluster's munge key: made once on this machine (mode 0600), then copied to every HPC VM."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ai_how.errors import AiHowError

KEY_BYTES = 1024  # what `mungekey` makes by default
MIN_KEY_BYTES = 32  # munged refuses shorter keys


def ensure_munge_key(path: Path) -> Path:
    """Create a random munge key at ``path`` if there is none; reuse the existing one otherwise.

    The key is written to a private temp file and hard-linked into place, so no reader ever sees a
    partial key and two concurrent callers end up with the same one (the link fails for the second).
    """
    if path.exists():
        size = path.stat().st_size
        if size < MIN_KEY_BYTES:
            raise AiHowError(
                f"the munge key {path} is {size} bytes; munged needs at least {MIN_KEY_BYTES}",
                fix=f"delete {path} and run the command again to make a new one",
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # made by someone else meanwhile: theirs wins
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
