"""The model server process: fetch a synced model version, verify it, serve V1 + V2 + OpenAI + /metrics.

    python -m ai_how.serving.server --model-uri s3://models/digits-cnn/v3 --name digits-cnn \
        [--config cluster.yaml] [--host 127.0.0.1] [--port 8080] [--cache-dir DIR]

Built on KServe's ``ModelServer``, so the same runtime runs in a KServe pod (there,
``--host 0.0.0.0``). Exit codes: 0 stopped, 3 the model could not be fetched or
failed verification, 4 the model could not be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

EXIT_FETCH, EXIT_LOAD = 3, 4


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
    return p.parse_args(argv)


def fetch(args: argparse.Namespace) -> Path:
    """Download the version into the cache, verifying every file against its sha256 manifest."""
    from ai_how.objectstore.base import open_store
    from ai_how.objectstore.sync import download_verified

    store_config = None
    if args.config is not None:
        from ai_how.config.loader import load_config

        store_config = load_config(args.config).config.mlops.object_store
    store, prefix = open_store(args.model_uri, store_config)
    target: Path = Path(args.cache_dir) / str(args.name) / prefix.replace("/", "_")
    manifest = download_verified(store, prefix, target)
    print(f"fetched {len(manifest.files)} files from {args.model_uri}, sha256 verified", flush=True)
    return target


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


def serve(model: Any, host: str, port: int) -> None:
    """KServe's ModelServer, single REST worker, bound to ``host`` (KServe itself always binds 0.0.0.0)."""
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    server = ModelServer(http_port=port, enable_grpc=False, workers=1)
    server.register_model(model)
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
    asyncio.run(server._serve())


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv at import; keep our flags away from it
    from ai_how.errors import AiHowError

    started = time.monotonic()
    try:
        model_dir = fetch(args)
    except AiHowError as exc:
        print(f"error: cannot serve {args.model_uri}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FETCH
    from kserve.model_server import app

    from ai_how.serving import openai_routes
    from ai_how.serving.runtimes import LLMModel, build_model

    try:
        model = build_model(args.name, model_dir)
    except Exception as exc:  # any load failure ends the process with a clear line
        print(f"error: cannot load the model in {model_dir}: {exc}", file=sys.stderr, flush=True)
        return EXIT_LOAD
    if isinstance(model, LLMModel):
        openai_routes.register(app, model)
    add_request_metrics(app)
    print(
        f"model {args.name} loaded in {time.monotonic() - started:.2f} s; serving on http://{args.host}:{args.port}",
        flush=True,
    )
    serve(model, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
