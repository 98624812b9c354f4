"""The model server process: fetch a synced model version, verify it, serve V1 + V2 + OpenAI + /metrics.

    python -m ai_how.serving.server --model-uri s3://models/digits-cnn/v3 --name digits-cnn \
        [--config cluster.yaml] [--host 127.0.0.1] [--port 8080] [--cache-dir DIR] [--production-port P]

Built on KServe's ``ModelServer``, so the same runtime runs in a KServe pod (there,
``--host 0.0.0.0``). Every response carries ``x-ai-how-model-name`` and ``x-ai-how-model-version``,
and V2 model metadata lists the version: both come from the synced manifest the server verified,
so a client can tell exactly which version answers.

Promotion without a gap (the local deployer's switch): a candidate server starts on its own port;
SIGUSR1 makes it listen on ``--production-port`` as well, with SO_REUSEPORT, beside the previous
production server, which is stopped only after the candidate answers there.

Exit codes: 0 stopped, 3 the model could not be fetched or failed verification, 4 the model could
not be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_FETCH, EXIT_LOAD = 3, 4
NAME_HEADER, VERSION_HEADER = "x-ai-how-model-name", "x-ai-how-model-version"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ai-how-model-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-uri", required=True, help="object-store URI of a synced model version")
    p.add_argument("--name", required=True, help="model name in the protocol paths")
    p.add_argument(
        "--config", type=Path, default=None, help="cluster config (object-store endpoint/credentials)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/ai-how-model-cache"))
    p.add_argument(
        "--production-port",
        type=int,
        default=None,
        help="port to listen on as well when promoted (SIGUSR1), shared with the previous server",
    )
    return p.parse_args(argv)


@dataclass(frozen=True)
class Fetched:
    model_dir: Path
    version: str  # the model version recorded in the synced manifest ('' when it records none)


def fetch(args: argparse.Namespace) -> Fetched:
    """Download the version into the cache, verifying every file against its sha256 manifest."""
    from ai_how.objectstore.base import open_store
    from ai_how.objectstore.verified import download_verified

    store_config = None
    if args.config is not None:
        from ai_how.config.loader import load_config

        store_config = load_config(args.config).config.mlops.object_store
    store, prefix = open_store(args.model_uri, store_config)
    # One cache folder per version URI: a candidate never writes where a running server loaded from.
    key = hashlib.sha256(str(args.model_uri).rstrip("/").encode()).hexdigest()[:16]
    target: Path = Path(args.cache_dir) / str(args.name) / key
    manifest = download_verified(store, prefix, target)
    print(f"fetched {len(manifest.files)} files from {args.model_uri}, sha256 verified", flush=True)
    return Fetched(target, str(manifest.meta.get("version", "")))


def add_identity(app: Any, dataplane: Any, name: str, version: str) -> None:
    """Say which model version answers: a header on every response, ``versions`` in V2 metadata."""
    headers = {NAME_HEADER: name, VERSION_HEADER: version}

    @app.middleware("http")
    async def identify(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.update(headers)
        return response

    original = dataplane.model_metadata

    async def with_version(model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await original(model_name)
        if version:
            metadata["versions"] = [version]
        return metadata

    dataplane.model_metadata = with_version


def add_request_metrics(app: Any) -> None:
    """``ai_how_requests_total{route,method,code}``: KServe exports latency histograms, not request counts."""
    from prometheus_client import Counter

    requests = Counter("ai_how_requests", "HTTP requests served", ["route", "method", "code"])

    @app.middleware("http")
    async def count(request: Any, call_next: Any) -> Any:
        code = 500
        try:
            response = await call_next(request)
            code = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            requests.labels(getattr(route, "path", "unmatched"), request.method, str(code)).inc()


def production_socket(host: str, port: int, attempts: int = 50) -> socket.socket:
    """A listening socket on ``port`` shared (SO_REUSEPORT) with the production server it replaces."""
    for attempt in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
            continue
        sock.listen(2048)
        sock.set_inheritable(False)
        return sock
    raise AssertionError("unreachable")  # pragma: no cover


async def listen_production(app: Any, host: str, port: int) -> None:
    """Serve the same app on the production port too (a second uvicorn server in this event loop)."""
    import uvicorn

    try:
        sock = await asyncio.to_thread(production_socket, host, port)
    except OSError as exc:
        print(f"error: cannot listen on production port {port}: {exc.strerror}", file=sys.stderr, flush=True)
        return
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=5)
    print(f"promoted: serving on http://{host}:{port} as well", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def serve(model: Any, host: str, port: int, version: str, production_port: int | None = None) -> None:
    """KServe's ModelServer, single REST worker, bound to ``host`` (KServe itself always binds 0.0.0.0)."""
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING, app
    from kserve.protocol.rest.server import RESTServer

    server = ModelServer(http_port=port, enable_grpc=False, workers=1)
    server.register_model(model)
    add_identity(app, server.dataplane, model.name, version)
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        port,
        workers=1,
        grace_period=5,
    )
    rest.config.host = host
    server.servers.append(rest.start())
    server.setup_event_loop()
    server.register_signal_handler()
    tasks: list[asyncio.Task[None]] = []

    async def main() -> None:
        if production_port is not None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                signal.SIGUSR1,
                lambda: tasks.append(loop.create_task(listen_production(app, host, production_port))),
            )
        await server._serve()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv at import; keep our flags away from it
    from ai_how.errors import AiHowError

    started = time.monotonic()
    try:
        fetched = fetch(args)
    except AiHowError as exc:
        print(f"error: cannot serve {args.model_uri}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FETCH
    from kserve.model_server import app

    from ai_how.serving import openai_routes
    from ai_how.serving.runtimes import LLMModel, build_model

    try:
        model = build_model(args.name, fetched.model_dir)
    except Exception as exc:  # any load failure ends the process with a clear line
        print(f"error: cannot load the model in {fetched.model_dir}: {exc}", file=sys.stderr, flush=True)
        return EXIT_LOAD
    if isinstance(model, LLMModel):
        openai_routes.register(app, model)
    add_request_metrics(app)
    print(
        f"model {args.name} v{fetched.version or '?'} loaded in {time.monotonic() - started:.2f} s; "
        f"serving on http://{args.host}:{args.port}",
        flush=True,
    )
    serve(model, args.host, args.port, fetched.version, args.production_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
