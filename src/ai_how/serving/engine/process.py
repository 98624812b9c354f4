"""The engine in its own process, so HTTP work never competes with the decode loop for the GIL.

At a few milliseconds per decode step the engine loop is host-bound: in one process with the
server, every request parsed, every chunk streamed and every metric scraped takes the GIL the
loop needs, and step times grew from ~1.5 ms to ~20 ms under load (measured on an H100). So the
server keeps the tokenizer, streaming and HTTP, and a child process (spawned: CUDA needs it) owns
the weights, the KV cache and the loop, as in vLLM's engine-core split.

Messages over one pipe, pickled: parent -> child lists of commands ``("add", id, prompt, params)``,
``("abort", id)``, ``("stop",)`` (a writer thread batches whatever queued up, so the event loop never
blocks on the pipe and the child takes the GIL once per batch, not once per request); child ->
parent ``("ready", context_limit, phases)``, ``("failed", message)``, and one ``("step", updates,
stats)`` per engine step. Admission (429) is decided in the parent, which knows how many requests it
has in flight, so no round trip sits on the request path.

Several HTTP processes, one engine: with ``EngineSpec.listen`` the child also accepts connections on a
Unix socket (authenticated with ``EngineSpec.key``, which never leaves the processes' memory and
environment). Each connection (an HTTP worker's ``EngineProcess`` in attach mode) speaks the same
protocol with its own request ids; the child tags them with the connection's index and routes each
step's updates back to the connection that asked. One HTTP process saturated at ~770 req/s on an
H100 machine while the engine behind it did ~1,900: the front end scales by processes, the engine
stays one.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from ai_how.serving.engine.protocol import (
    EngineFull,
    EngineGone,
    EngineStats,
    SamplingParams,
    Update,
    check_request,
)

READY_TIMEOUT_S = 600.0
CLIENT_SHIFT = 40  # engine-side id = (connection index << CLIENT_SHIFT) | the connection's own id
_LOCAL = (1 << CLIENT_SHIFT) - 1


@dataclass(frozen=True)
class EngineSpec:
    """What the child needs to build the engine (all picklable)."""

    model_dir: Path
    device: str
    dtype: str
    max_batch: int
    eos_ids: set[int]  # the server reads them with the tokenizer: the child never loads one
    listen: str | None = None  # a Unix socket path where HTTP workers attach
    key: bytes = b""  # their authentication key
    kv_cache_bytes: int | None = None  # None: the engine's default budget

    def __repr__(self) -> str:  # never print the key
        return f"EngineSpec({self.model_dir}, {self.device}, {self.dtype}, max_batch={self.max_batch})"


@dataclass(frozen=True)
class EngineShare:
    """One engine, several HTTP processes: where the engine listens, the key, whether this process
    attaches to it (an HTTP worker) or runs it, and how many HTTP processes share it."""

    address: str
    key: bytes
    attach: bool
    processes: int

    def __repr__(self) -> str:  # never print the key
        return f"EngineShare({self.address}, attach={self.attach}, processes={self.processes})"


class _Clients:
    """The connections the engine answers: index 0 is the parent's pipe, then attached workers."""

    def __init__(self, parent: Connection) -> None:
        self.connections: dict[int, Connection] = {0: parent}
        self.locks: dict[int, threading.Lock] = {0: threading.Lock()}
        self.open: dict[int, set[int]] = {}  # a worker's requests not yet finished (engine-side ids)
        self._next = 1
        self._lock = threading.Lock()

    def add(self, conn: Connection) -> int:
        with self._lock:
            index, self._next = self._next, self._next + 1
            self.locks[index] = threading.Lock()
            self.open[index] = set()
            self.connections[index] = conn
        return index

    def drop(self, index: int) -> None:
        """Forget a worker's connection and wake its reader, which closes it (see ``_shut_down``)."""
        with self._lock:
            conn = self.connections.pop(index, None)
        if conn is not None and index:
            _shut_down(conn)

    def send(self, index: int, message: tuple[Any, ...]) -> None:
        conn = self.connections.get(index)
        if conn is None:
            return  # that worker has gone: its requests' results have no one to go to
        try:
            with self.locks[index]:
                conn.send(message)
        except (OSError, ValueError):
            if index:  # a worker went away; the parent's pipe failing ends the process elsewhere
                self.drop(index)

    def route(self, updates: list[Update], stats: tuple[Any, ...]) -> None:
        """Each connection gets its own requests' updates (with its own ids) and the stats."""
        if len(self.connections) == 1 and len(self.open) == 0:
            # (a gone worker's last updates carry its tag: nobody to tell)
            packed = [(u.request_id, u.tokens, u.finish) for u in updates if u.request_id <= _LOCAL]
            self.send(0, ("step", packed, stats))
            return
        groups: dict[int, list[tuple[int, list[int], str | None]]] = {}
        for u in updates:
            index = u.request_id >> CLIENT_SHIFT
            groups.setdefault(index, []).append((u.request_id & _LOCAL, u.tokens, u.finish))
            if u.finish is not None and index:
                self.open.get(index, set()).discard(u.request_id)
        for index, packed in groups.items():
            self.send(index, ("step", packed, stats))

    def keep_informed(self, read_stats: Callable[[], tuple[Any, ...]], every_s: float = 0.1) -> None:
        """Every ``every_s``, the stats to every connection if they changed since: a worker with no
        request in a step (or an idle engine) still reports current gauges and counters."""
        last: tuple[Any, ...] | None = None
        while True:
            time.sleep(every_s)
            stats = read_stats()
            if stats != last and len(self.connections) > 1:
                for index in list(self.connections):
                    self.send(index, ("step", [], stats))
                last = stats


def _host(conn: Connection, spawned_at: float) -> None:
    """A prestarted engine process: import the heavy modules now, then build what the server asks
    for (``("build", spec)``), or exit quietly when the server closes the pipe (no LLM to serve)."""
    begun = time.time()
    import torch  # noqa: F401

    import ai_how.serving.engine.core
    import ai_how.serving.engine.model  # noqa: F401
    from ai_how.serving.engine import kernels

    kernels.available()  # imports Triton (and initialises the CUDA driver) while the server fetches
    imported_s = time.time() - begun
    try:
        message = conn.recv()
    except EOFError:
        return
    if message[0] == "build":
        _child(message[1], conn, spawned_at, (begun, imported_s))


_prestarted: list[tuple[Any, Connection]] = []


def prestart() -> None:
    """Spawn the engine process now, so its start (an interpreter importing torch and Triton: most
    of the cold start on a fresh GPU machine) overlaps the server's own imports and the model fetch.
    The first ``EngineProcess.warm_up`` adopts it; ``discard_prestarted`` ends it unused. (It creates
    no CUDA context before it is adopted: the server may hold only classifiers, on a GPU in an
    exclusive compute mode.)"""
    if _prestarted:
        return
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_host, args=(child, time.time()), name="ai-how-engine", daemon=True)
    process.start()
    child.close()
    _prestarted.append((process, parent))


def discard_prestarted() -> None:
    while _prestarted:
        process, conn = _prestarted.pop()
        conn.close()  # the host sees EOF and exits
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def _child(
    spec: EngineSpec, conn: Connection, spawned_at: float, prestarted: tuple[float, float] | None = None
) -> None:
    """The engine process: build, warm up, report ready, then take commands until told to stop.
    ``prestarted``: (when the host began, its import time) for a process ``prestart`` spawned."""
    listener: Listener | None = None  # where HTTP workers attach (``spec.listen``)
    closing = threading.Event()
    try:
        begun = prestarted[0] if prestarted else time.time()
        begun_imports = time.time()
        import torch

        from ai_how.serving.engine import kernels
        from ai_how.serving.engine.core import Engine
        from ai_how.serving.engine.loader import resolve
        from ai_how.serving.engine.model import Decoder

        kernels.available()  # Triton imported before the freeze too
        gc.freeze()  # torch, Triton and the engine's modules out of the collector's sight (see server.main)
        started = time.monotonic()
        imported_s = (prestarted[1] if prestarted else 0.0) + time.time() - begun_imports
        device, dtype = resolve(spec.device, spec.dtype)
        if device.type == "cuda":  # the CUDA context, timed apart from the weights (an empty tensor
            torch.zeros(1, device=device)  # allocates nothing and may not create it)
            torch.cuda.synchronize(device)
        device_ready = time.monotonic()
        decoder = Decoder.load(spec.model_dir, device, dtype)
        stats_holder: list[EngineStats] = []
        clients = _Clients(conn)  # the engine thread and the command threads all answer through it

        def read_stats() -> tuple[Any, ...]:
            return _stats_tuple(stats_holder[0])

        def emit(updates: list[Update]) -> None:
            clients.route(updates, read_stats())

        with torch.inference_mode():
            engine = Engine(
                decoder,
                spec.eos_ids,
                emit,
                max_batch=spec.max_batch,
                max_waiting=1 << 30,
                kv_cache_bytes=spec.kv_cache_bytes,
            )
        stats_holder.append(engine.stats)
        # A poisoned device (sticky CUDA error): exit, so the server sees the process gone and says so.
        engine.on_fatal = lambda why: os._exit(70)
        loaded = time.monotonic()
        engine.warm_up(background=True)  # graphs captured while serving: ready seconds sooner
        gc.collect()  # what loading left, then the engine's long-lived objects out of sight too
        gc.freeze()
        phases = {
            "engine_spawn_s": begun - spawned_at,  # interpreter start until the child runs our code
            "engine_import_s": imported_s,
            "engine_device_s": device_ready - started,
            "load_s": loaded - device_ready,
            "warmup_s": time.monotonic() - loaded,
        }
        engine.start()
        ready = ("ready", engine.context_limit, phases)
        if spec.listen:
            threading.Thread(
                target=clients.keep_informed, args=(read_stats,), name="ai-how-stats", daemon=True
            ).start()
            listener = Listener(spec.listen, family="AF_UNIX", authkey=spec.key)
            threading.Thread(
                target=_accept,
                args=(listener, clients, engine, ready, closing),
                name="ai-how-attach",
                daemon=True,
            ).start()
        conn.send(ready)
    except Exception as exc:  # the parent reports it in one line
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    _serve_commands(conn, 0, clients, engine)  # until the parent says stop or goes away
    engine.stop()
    if listener is not None:
        closing.set()  # an accept that fails from now on ends the attach thread (a blocked one stays
        with contextlib.suppress(OSError):  # blocked: a daemon, gone with the process)
            listener.close()  # and the socket file with it, unless the server removed its folder first
            # (multiprocessing would otherwise unlink it again at exit, with a traceback)


def _stats_tuple(stats: EngineStats) -> tuple[Any, ...]:
    """What every step message carries: the gauges (running, waiting, kv usage), then the counters."""
    return (stats.running, stats.waiting, stats.kv_usage, *stats.counters())


def _accept(
    listener: Listener, clients: _Clients, engine: Any, ready: tuple[Any, ...], closing: threading.Event
) -> None:
    """Attach HTTP workers for as long as the engine runs (a bad key is refused by the handshake)."""
    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError, multiprocessing.AuthenticationError):
            if closing.is_set():
                return
            continue
        try:  # "ready" first, before any stats heartbeat can reach the new connection
            conn.send(ready)
        except (OSError, ValueError):
            conn.close()
            continue
        index = clients.add(conn)
        threading.Thread(
            target=_serve_commands, args=(conn, index, clients, engine), name="ai-how-worker", daemon=True
        ).start()


def _serve_commands(conn: Connection, index: int, clients: _Clients, engine: Any) -> None:
    """One connection's commands; a worker's ids are tagged with its index. Returns on stop (the
    parent's only) or when the connection closes (a worker's unfinished requests are then aborted)."""
    tag = index << CLIENT_SHIFT
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            break
        for message in batch:
            if message[0] == "add":
                _, request_id, prompt, params = message
                try:
                    if index:
                        clients.open[index].add(tag | request_id)
                    engine.submit_with_id(tag | request_id, prompt, params)
                except Exception as exc:  # this request fails alone; the sender checked the rest
                    print(
                        f"error: request {request_id} refused by the engine: {exc}",
                        file=sys.stderr,
                        flush=True,
                    )
                    clients.send(index, ("step", [(request_id, [], "error")], _stats_tuple(engine.stats)))
            elif message[0] == "abort":
                engine.abort(tag | message[1])
            elif message[0] == "stop" and index == 0:
                return
    if index:  # a worker gone: its requests stop now rather than hold their slots to the end
        clients.drop(index)
        conn.close()  # this thread read it: only it closes it
        for request_id in list(clients.open.pop(index, set())):
            engine.abort(request_id)


def _shut_down(conn: Connection) -> None:
    """End a socket connection that another thread is reading, without closing it: a close frees the
    descriptor's number while that thread's ``recv`` is between reads, the next file or socket opened
    takes the number, and the reader consumes its bytes (seen: a CA bundle read as a message, which
    then failed to load in the thread that had opened it). Shutdown wakes the reader with EOF; the
    reader closes."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


class EngineProcess:
    """A TokenEngine whose loop runs in a child process (see the module docstring)."""

    def __init__(
        self,
        spec: EngineSpec,
        emit: Callable[[list[Update]], None],
        capacity: int,
        attach: str | None = None,
    ) -> None:
        """``capacity``: requests in flight before 429. ``attach``: the Unix socket of an engine
        another server process runs (an HTTP worker's view of it), instead of a child of our own;
        ``spec.key`` authenticates."""
        self.spec = spec
        self.attach = attach
        self.emit = emit
        self.capacity = capacity
        self.stats = EngineStats()
        self.phases: dict[str, float] = {}
        self._context_limit = 0
        self._in_flight: set[int] = set()
        self._next_id = 0
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.gone: str | None = None  # why the engine process is no longer serving
        self.on_gone: list[Callable[[str], None]] = []  # not called when ``stop`` ended it
        self._stopped = False

    @property
    def context_limit(self) -> int:
        return self._context_limit

    def warm_up(self) -> None:
        """Start the child (or adopt the prestarted one) and wait until it has loaded the weights
        and captured its graphs; or, attaching, connect to the running engine."""
        if self.attach is not None:
            parent = Client(self.attach, family="AF_UNIX", authkey=self.spec.key)
        elif _prestarted:
            self._process, parent = _prestarted.pop()
            parent.send(("build", self.spec))
        else:
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            self._process = context.Process(
                target=_child, args=(self.spec, child, time.time()), name="ai-how-engine", daemon=True
            )
            self._process.start()
            child.close()
        self._conn = parent
        if not parent.poll(READY_TIMEOUT_S):
            raise RuntimeError(f"the engine process was not ready within {READY_TIMEOUT_S:.0f} s")
        message = parent.recv()
        if message[0] != "ready":
            raise RuntimeError(f"the engine process failed: {message[1]}")
        self._context_limit, self.phases = message[1], message[2]

    def start(self) -> None:
        # The reader must get the GIL promptly for each step's updates, however busy the event loop.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self._reader = threading.Thread(target=self._read, name="ai-how-engine-reader", daemon=True)
        self._reader.start()
        threading.Thread(target=self._write, name="ai-how-engine-writer", daemon=True).start()

    def stop(self) -> None:
        self._stopped = True  # what follows closes the connection: expected, not an engine lost
        if self._conn is not None:
            if self.attach is None:  # an attached worker leaves the engine running for the others
                self._outbox.put(("stop",))
            self._outbox.put(None)
        if self.attach is not None:
            return
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()

    def submit(self, prompt: list[int], params: SamplingParams) -> int:
        check_request(prompt, params, self._context_limit)
        with self._lock:  # gone is set under this lock, so no request slips in after the last failure
            if self.gone is not None:
                raise EngineGone(self.gone)
            if len(self._in_flight) >= self.capacity:
                raise EngineFull(f"{len(self._in_flight)} requests are in flight")
            self._next_id += 1
            request_id = self._next_id
            self._in_flight.add(request_id)
            self._send(("add", request_id, prompt, params))
        return request_id

    def abort(self, request_id: int) -> None:
        with self._lock:
            if request_id in self._in_flight:
                self._send(("abort", request_id))

    def _send(self, message: tuple[Any, ...]) -> None:
        self._outbox.put(message)

    def _write(self) -> None:
        """Send queued commands in batches: one pickle and one pipe write per batch."""
        assert self._conn is not None, "warm_up() starts the engine process"
        while True:
            first = self._outbox.get()
            batch = [first]
            while first is not None:
                try:
                    first = self._outbox.get_nowait()
                except queue.Empty:
                    break
                batch.append(first)
            done = batch[-1] is None
            commands = [m for m in batch if m is not None]
            if commands:
                try:
                    self._conn.send(commands)
                except OSError:  # the child is gone; the reader fails what is in flight
                    return
            if done:
                if self.attach is not None:  # the engine drops this worker; our reader sees the end
                    _shut_down(self._conn)
                return

    def _read(self) -> None:
        assert self._conn is not None
        while True:
            try:
                kind, *rest = self._conn.recv()
                if kind != "step":
                    continue
                packed, (running, waiting, kv_usage, *counters) = rest
                updates = [Update(request_id, tokens, finish) for request_id, tokens, finish in packed]
                self.stats.merge_counters(counters)
            except (EOFError, OSError):
                break
            except Exception:  # an unreadable message: the protocol is broken, treat the engine as gone
                traceback.print_exc()
                break
            finished = [u.request_id for u in updates if u.finish is not None]
            if finished:
                with self._lock:
                    self._in_flight.difference_update(finished)
            stats = self.stats
            stats.running, stats.waiting, stats.kv_usage = running, waiting, kv_usage
            try:
                self.emit(updates)
            except Exception:  # e.g. the event loop is closing: keep reading, keep the accounting right
                traceback.print_exc()
        if self.attach is not None:  # the reader owns the close (see _shut_down)
            self._conn.close()
        # the child is gone: every request still in flight fails rather than hanging, new ones get 503
        if self._process is not None:
            self._process.join(timeout=5)
        code = self._process.exitcode if self._process is not None else None
        with self._lock:
            self.gone = (
                f"the engine process exited (code {code})"
                if self.attach is None
                else f"the connection to the engine at {self.attach} closed"
            )
            lost, self._in_flight = self._in_flight, set()
        if not self._stopped:  # an end that stop() asked for is no engine lost
            for callback in self.on_gone:  # not ready first, then the failures: no request sees it ready
                callback(self.gone)
        if lost:
            self.emit([Update(request_id, [], "error") for request_id in lost])
