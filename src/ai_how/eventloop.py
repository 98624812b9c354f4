"""The event loop our processes run on: uvloop's when it is importable (the serve extra brings it),
else asyncio's. The model server and the benchmark's load processes both use it: uvloop's transports
cost less CPU per request than asyncio's selector loop (with the access log, 765 -> 1,289 req/s for
digits V1 at c=8 on the 2-core CI kind; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")


def _uvloop() -> ModuleType | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what ``new_event_loop`` builds."""
    return "asyncio" if _uvloop() is None else "uvloop"


def new_event_loop() -> asyncio.AbstractEventLoop:
    uvloop = _uvloop()
    return asyncio.new_event_loop() if uvloop is None else uvloop.new_event_loop()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on ``new_event_loop``'s loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
