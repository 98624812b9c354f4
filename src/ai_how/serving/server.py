"""The model server process: fetch a synced model version, verify it, serve V1 + V2 + OpenAI + /metrics.

    python -m ai_how.serving.server --model-uri s3://models/digits-cnn/v3 --name digits-cnn \
        [--model llm-sft=s3://models/llm-sft/v2 ...] [--device auto|cpu|cuda] [--engine ours|naive|transformers] \
        [--max-batch N] [--max-waiting N] [--kv-cache-gb G] [--config cluster.yaml] [--host 127.0.0.1] \
        [--port 8080] [--cache-dir DIR] [--production-port P]

Several models can be served at once (``--model NAME=URI``, repeatable, beside or instead of
``--name``/``--model-uri``); each keeps its own version in V2 metadata.

Built on KServe's ``ModelServer``, so the same runtime runs in a KServe pod (there,
``--host 0.0.0.0``). Every response carries ``x-ai-how-model-name`` and ``x-ai-how-model-version``,
and V2 model metadata lists the version: both come from the synced manifest the server verified,
so a client can tell exactly which version answers.

Promotion without a gap (the local deployer's switch): a candidate server starts on its own port;
SIGUSR1 makes it listen on ``--production-port`` as well, with SO_REUSEPORT, beside the previous
production server, which is stopped only after the candidate answers there.

Several HTTP processes (``--http-workers N``): past ~770 req/s one Python process cannot parse,
tokenise and answer faster, so N processes listen on the same port (SO_REUSEPORT; the kernel spreads
connections) and share each LLM's one engine process over a Unix socket; classifiers are loaded by
each. The first process runs the engines and starts the others (the same command with
``--attach-engines DIR``); they exit with it.

Exit codes: 0 stopped, 3 the model could not be fetched or failed verification, 4 the model could
not be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.eventloop import new_event_loop
from ai_how.serving import workers  # light: no torch, no prometheus_client (set up before its import)
from ai_how.serving.draining import Draining
from ai_how.serving.headers import NAME_HEADER, VERSION_HEADER

EXIT_FETCH, EXIT_LOAD = 3, 4
__all__ = ["NAME_HEADER", "VERSION_HEADER", "main"]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ai-how-model-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-uri", help="object-store URI of a synced model version")
    p.add_argument("--name", help="model name in the protocol paths")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="another model to serve (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu or cuda[:N]")
    p.add_argument("--engine", default="ours", help="LLM engine: ours, naive or transformers")
    p.add_argument("--max-batch", type=int, default=None, help="LLM sequences per decode step")
    p.add_argument(
        "--max-waiting", type=int, default=None, help="queued requests before 429 (default: 4 x --max-batch)"
    )
    p.add_argument(
        "--kv-cache-gb",
        type=float,
        default=None,
        help="memory for our engine's KV cache (default: half the GPU memory free after the weights; 2 on a CPU)",
    )
    p.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (at thousands of req/s)"
    )
    p.add_argument(
        "--engine-process",
        default="auto",
        choices=["auto", "yes", "no"],
        help="run our LLM engine in its own process (auto: on a GPU)",
    )
    p.add_argument(
        "--http-workers",
        type=int,
        default=1,
        help="HTTP processes on the port, sharing each LLM's engine process (our engine only)",
    )
    p.add_argument("--attach-engines", default=None, help=argparse.SUPPRESS)  # set for the HTTP workers
    p.add_argument(
        "--stream-interval",
        type=int,
        default=1,
        help="tokens per streamed event after the first (coalescing)",
    )
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
    args = p.parse_args(argv)
    models: list[tuple[str, str]] = []
    if args.model_uri or args.name:
        if not (args.model_uri and args.name):
            p.error("--model-uri and --name go together")
        models.append((args.name, args.model_uri))
    for spec in args.model:
        name, sep, uri = spec.partition("=")
        if not sep or not name or not uri:
            p.error(f"--model {spec!r}: write NAME=URI")
        models.append((name, uri))
    if not models:
        p.error("name a model: --model-uri URI --name NAME, or --model NAME=URI")
    if len({name for name, _ in models}) != len(models):
        p.error("each model needs its own name")
    if args.http_workers < 1:
        p.error("--http-workers must be at least 1")
    if args.kv_cache_gb is not None and not args.kv_cache_gb > 0:
        p.error("--kv-cache-gb must be a positive number of GiB, e.g. 8")
    if workers.shares_port(args):
        if args.engine != "ours":
            p.error("--http-workers > 1 shares our engine's process: use --engine ours")
        if args.engine_process == "no":
            p.error("--http-workers > 1 runs the engine in its own process: drop --engine-process no")
        args.engine_process = "yes"
    args.models = models
    return args


@dataclass(frozen=True)
class Fetched:
    model_dir: Path
    version: str  # the model version recorded in the synced manifest ('' when it records none)


def fetch(args: argparse.Namespace, name: str, uri: str) -> Fetched:
    """Download the version into the cache, verifying every file against its sha256 manifest."""
    from ai_how.objectstore.base import open_store
    from ai_how.objectstore.verified import download_verified

    store_config = None
    if args.config is not None:
        from ai_how.config.loader import load_config

        store_config = load_config(args.config).config.mlops.object_store
    store, prefix = open_store(uri, store_config)
    # One cache folder per version URI: a candidate never writes where a running server loaded from.
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    target: Path = Path(args.cache_dir) / name / key
    manifest = download_verified(store, prefix, target)
    print(f"fetched {len(manifest.files)} files from {uri}, sha256 verified", flush=True)
    return Fetched(target, str(manifest.meta.get("version", "")))


def add_identity(app: Any, dataplane: Any, versions: dict[str, str]) -> None:
    """Say which model version answers: headers on every response naming the model the path (or,
    with one model, the server) serves, and ``versions`` in each model's V2 metadata."""
    only = next(iter(versions)) if len(versions) == 1 else None

    def model_of(path: str) -> str | None:
        for marker in ("/v2/models/", "/v1/models/"):
            if path.startswith(marker):
                return path[len(marker) :].split("/", maxsplit=1)[0].split(":", maxsplit=1)[0]
        return only

    @app.middleware("http")
    async def identify(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        name = model_of(request.url.path)
        if name in versions:
            response.headers[NAME_HEADER] = name
            response.headers[VERSION_HEADER] = versions[name]
        return response

    original = dataplane.model_metadata

    async def with_version(model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await original(model_name)
        if versions.get(model_name):
            metadata["versions"] = [versions[model_name]]
        return metadata

    dataplane.model_metadata = with_version


def add_overload_answer(app: Any) -> None:
    """A full LLM admission queue answers 429 with Retry-After on every route (V1/V2 too); an engine
    that has stopped answers 503."""
    from fastapi.responses import JSONResponse

    from ai_how.serving.engine.protocol import EngineFull, EngineGone
    from ai_how.serving.fastpath import refusal

    async def refused(request: Any, exc: Exception) -> Any:
        status, body, headers = refusal(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_exception_handler(EngineFull, refused)
    app.add_exception_handler(EngineGone, refused)


class _RequestMetrics:
    """``ai_how_requests_total{route,method,code}`` (KServe exports latency histograms, not request counts)
    and ``ai_how_requests_in_flight`` (what KEDA scales a model's replicas on)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.requests = Counter("ai_how_requests", "HTTP requests served", ["route", "method", "code"])
        self.in_flight = Gauge(  # summed over the live HTTP processes when there are several
            "ai_how_requests_in_flight", "HTTP requests being answered", multiprocess_mode="livesum"
        )

    def started(self) -> None:
        self.in_flight.inc()

    def finished(self, route: str, method: str, code: int) -> None:
        self.in_flight.dec()
        self.requests.labels(route, method, str(code)).inc()


def add_request_metrics(app: Any) -> _RequestMetrics:
    """Count the app's requests; returns the counters for requests answered outside it (the fast path)."""
    metrics = _RequestMetrics()

    @app.middleware("http")
    async def count(request: Any, call_next: Any) -> Any:
        code = 500
        metrics.started()
        try:
            response = await call_next(request)
            code = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            metrics.finished(getattr(route, "path", "unmatched"), request.method, code)

    return metrics


def limit_cpu_threads(device: str) -> None:
    """On the CPU, leave half the cores to the event loop: torch's intra-op threads spin while they
    wait, and on 2 cores they took the event loop's core (digits V1: 184 -> 297 req/s with 1 thread)."""
    import os

    from ai_how.serving.devices import gpu_expected

    if not gpu_expected(device):  # torch is imported only then: an LLM's HTTP processes never need it
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


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


async def listen_production(
    app: Any, host: str, port: int, draining: Draining | None = None, access_log: bool = True
) -> None:
    """Serve the same app on the production port too (a second uvicorn server in this event loop)."""
    import uvicorn

    try:
        sock = await asyncio.to_thread(production_socket, host, port)
    except OSError as exc:
        print(f"error: cannot listen on production port {port}: {exc.strerror}", file=sys.stderr, flush=True)
        return
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        timeout_graceful_shutdown=5,
        access_log=access_log,
        proxy_headers=access_log,  # the forwarded client address is for the access log alone
    )
    print(f"promoted: serving on http://{host}:{port} as well", flush=True)
    production = uvicorn.Server(config)
    if draining is not None:  # SIGUSR2 closes this server's listener
        draining.listeners.append(production)
    await production.serve(sockets=[sock])


def serve(
    models: list[Any],
    host: str,
    port: int,
    versions: dict[str, str],
    production_port: int | None = None,
    front: Any = None,
    access_log: bool = True,
    sock: socket.socket | None = None,
    workers: list[Any] | None = None,
    promoted: Path | None = None,
) -> None:
    """KServe's ModelServer, single REST worker, bound to ``host`` (KServe itself always binds 0.0.0.0).
    ``front`` wraps KServe's app (the fast path) when given; ``sock``: listen there (a port shared
    by the HTTP processes); ``workers``: the other HTTP processes, told of promotion signals too;
    ``promoted``: the flag file a promotion writes, so a worker that starts later is promoted at once."""
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING, app
    from kserve.protocol.rest.server import RESTServer

    server = ModelServer(http_port=port, enable_grpc=False, workers=1)
    for model in models:
        server.register_model(model)
    add_identity(app, server.dataplane, versions)
    add_overload_answer(app)
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        port,
        workers=1,
        grace_period=5,
    )
    rest.config.host = host
    if not access_log:  # uvicorn's own way; its Config applied the (default) True when KServe built it,
        rest.config.access_log = False  # and the protocol logs whenever the logger has handlers
        logging.getLogger("uvicorn.access").handlers = []
        logging.getLogger("uvicorn.access").propagate = False
        # X-Forwarded-For is read for the access log alone: without it, no per-request address parsing
        rest.config.proxy_headers = False
    served = Draining(front if front is not None else app)
    rest.config.app = served
    if sock is None:
        server.servers.append(rest.start())
    else:
        rest.create_application()
        server.servers.append(rest._server.serve(sockets=[sock]))
    tasks: list[asyncio.Task[None]] = []

    async def main() -> None:
        if production_port is not None:
            loop = asyncio.get_running_loop()

            def tell_workers(signum: int) -> None:
                for worker in workers or []:
                    if worker.poll() is None:
                        worker.send_signal(signum)

            def promote() -> None:  # once: a repeated SIGUSR1 must not open a second listener
                if promoted is not None and workers:
                    promoted.touch()
                tell_workers(signal.SIGUSR1)
                if not tasks:
                    tasks.append(
                        loop.create_task(listen_production(served, host, production_port, served, access_log))
                    )

            def drain() -> None:  # hand the port over (see draining.py)
                tell_workers(signal.SIGUSR2)
                served.start()

            loop.add_signal_handler(signal.SIGUSR1, promote)
            loop.add_signal_handler(signal.SIGUSR2, drain)
            if promoted is not None and not workers and promoted.exists():  # a worker started late
                promote()
        await server._serve()

    # uvloop's loop when importable (``asyncio.run`` would bypass uvicorn's loop choice), with KServe's
    # exception handler and default executor set on the loop that runs
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        asyncio.set_event_loop(runner.get_loop())
        server.setup_event_loop()
        server.register_signal_handler()
        runner.run(main())


def wants_engine_process(args: argparse.Namespace) -> bool:
    """Whether an LLM here will run our engine in its own process (judged before torch is imported:
    a GPU is assumed present when the NVIDIA device nodes are)."""
    if args.engine != "ours" or args.engine_process == "no" or args.attach_engines:
        return False
    if args.engine_process == "yes":
        return True
    from ai_how.serving.devices import gpu_expected

    return gpu_expected(args.device)


def main(argv: list[str] | None = None) -> int:
    began = time.monotonic()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse(raw)
    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv at import; keep our flags away from it
    metrics_dir = None
    if args.attach_engines:  # first: gone with the first process, promotion signals held
        workers.exit_with_parent()
        workers.hold_promotion_signals()
    elif args.http_workers > 1:  # before anything imports prometheus_client
        metrics_dir = workers.share_metrics()
    if wants_engine_process(args):  # its start overlaps our imports and the fetch (cold start)
        from ai_how.serving.engine.process import prestart

        prestart()
    from kserve.model_server import app

    from ai_how.errors import AiHowError
    from ai_how.serving import openai_routes
    from ai_how.serving.fastpath import V1_PREDICT, FastPath, health_routes, v1_routes
    from ai_how.serving.metrics import shared_metrics_route
    from ai_how.serving.runtimes import LLMModel, ServeOptions, build_model

    phases = {"import_s": time.monotonic() - began, "fetch_s": 0.0, "load_s": 0.0, "warmup_s": 0.0}
    # Objects alive as long as the process leave the cyclic collector's sight: a full collection
    # walked ~540k start-up objects (642 ms with torch, transformers and kserve imported), stopping
    # every thread of the process. The imports now (no collection: it would cost what it saves) ...
    gc.freeze()
    limit_cpu_threads(args.device)
    shared = workers.shares_port(args)
    engines_dir = args.attach_engines or (workers.share_engines() if args.http_workers > 1 else None)
    options = ServeOptions(
        args.device,
        args.engine,
        args.max_batch,
        args.max_waiting,
        args.stream_interval,
        args.engine_process,
        engines_dir,
        attach=bool(args.attach_engines),
        http_processes=args.http_workers,
        kv_cache_gb=args.kv_cache_gb,
    )
    models: list[Any] = []
    versions: dict[str, str] = {}
    for name, uri in args.models:
        started = time.monotonic()
        try:
            fetched = fetch(args, name, uri)
        except AiHowError as exc:
            print(f"error: cannot serve {uri}: {exc}", file=sys.stderr, flush=True)
            return EXIT_FETCH
        phases["fetch_s"] += time.monotonic() - started
        started = time.monotonic()
        try:
            model = build_model(name, fetched.model_dir, options)
        except Exception as exc:  # any load failure ends the process with a clear line
            print(f"error: cannot load the model in {fetched.model_dir}: {exc}", file=sys.stderr, flush=True)
            return EXIT_LOAD
        load_phases = getattr(model, "phases", {})
        phases["load_s"] += load_phases.get("load_s", time.monotonic() - started)
        phases["warmup_s"] += load_phases.get("warmup_s", 0.0)
        for extra in ("engine_spawn_s", "engine_import_s", "engine_device_s"):  # the engine process's start
            if extra in load_phases:
                phases[extra] = phases.get(extra, 0.0) + load_phases[extra]
        models.append(model)
        versions[name] = fetched.version
        print(
            f"model {name} v{fetched.version or '?'} ready in {time.monotonic() - started:.2f} s", flush=True
        )
    from ai_how.serving.engine.process import discard_prestarted

    discard_prestarted()  # no LLM adopted it (e.g. only classifiers here)
    llms = {m.name: m for m in models if isinstance(m, LLMModel)}
    routes = openai_routes.register(app, llms, versions) if llms else {}
    v1 = v1_routes({m.name: m for m in models}, versions)
    routes.update(v1)
    metrics = add_request_metrics(app)
    get_routes = health_routes({m.name: m for m in models})
    shared_metrics = shared_metrics_route()
    if shared_metrics is not None:
        get_routes["/metrics"] = shared_metrics
    front = FastPath(app, routes, metrics, get_routes, dict.fromkeys(v1, V1_PREDICT))
    sock = production_socket(args.host, args.port, attempts=1) if shared else None
    others = [] if args.attach_engines else workers.start(raw, args.http_workers - 1, engines_dir or "")
    workers.watch(others)
    role = (
        f"HTTP worker of {os.getppid()}" if args.attach_engines else f"{args.http_workers} HTTP process(es)"
    )
    print("startup-phases " + json.dumps({k: round(v, 4) for k, v in phases.items()}), flush=True)
    print(
        f"serving {', '.join(versions)} on http://{args.host}:{args.port} "
        f"({time.monotonic() - began:.2f} s after start; {role})",
        flush=True,
    )
    gc.collect()  # ... what loading the models left (cheap: the imports are frozen), then that too
    gc.freeze()
    try:
        serve(
            models,
            args.host,
            args.port,
            versions,
            args.production_port,
            front,
            not args.no_access_log,
            sock,
            others,
            workers.promoted_flag(engines_dir) if engines_dir else None,
        )
    finally:
        workers.stop(others, None if args.attach_engines else engines_dir, metrics_dir)
        for model in models:
            stop = getattr(model, "stop", None)
            if stop is not None:
                stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
