"""Named fault-injection points for crash/resume tests (inactive unless AI_HOW_FAILPOINTS is set).

``AI_HOW_FAILPOINTS="sync.file_done=2:kill"`` kills the process (SIGKILL, like a power
cut or OOM kill) the 2nd time the point is reached; ``:raise`` raises instead. Hits are counted
per spec: setting a new AI_HOW_FAILPOINTS value starts the counts afresh.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

_hits: Counter[tuple[str, str]] = Counter()
_lock = threading.Lock()


class FailpointError(RuntimeError):
    pass


def failpoint(name: str) -> None:
    spec = os.environ.get("AI_HOW_FAILPOINTS")
    if not spec:
        return
    for item in spec.split(","):
        point, _, rule = item.strip().partition("=")
        if point != name:
            continue
        count, _, action = rule.partition(":")
        with _lock:
            _hits[(spec, name)] += 1
            hit = _hits[(spec, name)]
        if hit == int(count or 1):
            if action == "raise":
                raise FailpointError(f"failpoint {name} hit {hit} times")
            os.kill(os.getpid(), signal.SIGKILL)
