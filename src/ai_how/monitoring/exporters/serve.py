"""One small HTTP server for an exporter's registry: ``/metrics`` (any path), stopped cleanly by SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from ai_how.errors import AiHowError


def serve(
    registry: CollectorRegistry, host: str, port: int, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve ``registry`` on ``host:port`` until SIGTERM or SIGINT; then stop listening and return."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise AiHowError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            fix="pick a free port with --port, or stop what listens there",
        ) from None
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready is not None:
            on_ready(f"http://{host}:{server.server_port}/metrics")
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
