"""``ai-how bench serve`` as a function: every load point against an endpoint (and a second one to compare),
in this process or spread over load processes (``bench.workers``), GPU samples per point, the client's
own capacity for open-loop runs; returns the report document."""

from __future__ import annotations

import contextlib
import dataclasses
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ai_how.bench import metrics
from ai_how.bench.gpu import NO_GPU, GpuSampler
from ai_how.bench.loadgen import PointRun, RunPoint, Target, preflight, run_here
from ai_how.bench.records import LoadPoint
from ai_how.errors import AiHowError
from ai_how.eventloop import loop_name, run_loop

_SPARE_FDS = 64  # file descriptors kept for everything but the load's connections


@dataclass(frozen=True)
class Settings:
    points: tuple[LoadPoint, ...]
    duration_s: float
    warmup_s: float = 1.0
    grace_s: float = 30.0
    max_in_flight: int = 10_000
    processes: int = 1  # load processes each point is spread over


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards ``wanted`` + spare (up to the hard limit); the connections allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft - _SPARE_FDS))


def describe(target: Target) -> dict[str, Any]:
    return {
        "url": target.url,
        "model": target.model,
        "protocol": target.protocol,
        "path": target.path,
        "stream": target.stream,
    }


def point_document(run: PointRun, gpu: GpuSampler) -> dict[str, Any]:
    start, stop = run.window
    summary = metrics.summarize(run.records, start=start, stop=stop, scheduled=run.scheduled)
    workers = run.workers or [{"issued": summary["issued"], "connections": run.connections}]
    return {
        "point": run.point.label,
        "mode": run.point.mode,
        "value": run.point.value,
        **summary,
        "connections": run.connections,
        "workers": workers,
        "gpu": gpu.summary(run.t0 + start, run.t0 + stop),
    }


@dataclass
class Measured:
    points: list[list[dict[str, Any]]]  # per target, per load point
    capacity: float | None  # this client's req/s against a trivial endpoint (open loop only)


def _measure(
    targets: list[Target],
    settings: Settings,
    gpu: GpuSampler,
    progress: Callable[[str], None],
    run_point: RunPoint,
) -> Measured:
    """Check every target answers, measure the client's own capacity for open-loop points, run the points."""
    for target in targets:
        run_loop(preflight(target))
    spread = f" in {settings.processes} processes" if settings.processes > 1 else ""
    capacity = None
    if any(p.mode == "rate" for p in settings.points):
        from ai_how.bench.capacity import client_capacity

        progress(f"measuring this client's own capacity{spread} (trivial endpoint, 2.5 s)")
        capacity = round(client_capacity(run_point, settings.processes), 1)
    results = []
    for target in targets:
        points = []
        for point in settings.points:
            progress(
                f"{target.url} {point.label}{spread}: "
                f"{settings.warmup_s:g} s warm-up + {settings.duration_s:g} s"
            )
            run = run_point(
                target,
                point,
                duration_s=settings.duration_s,
                warmup_s=settings.warmup_s,
                grace_s=settings.grace_s,
                max_in_flight=settings.max_in_flight,
            )
            points.append(point_document(run, gpu))
        results.append(points)
    return Measured(results, capacity)


def fit_connections(settings: Settings) -> tuple[Settings, list[str]]:
    """Raise the open-files limit (load processes inherit it) for the connections one process needs;
    cap in-flight requests (with a warning) where it stays too low; one error line when a concurrency
    cannot have its connections."""
    n = settings.processes
    open_loop = any(p.mode == "rate" for p in settings.points)
    needed = max(settings.max_in_flight if open_loop else 0, *(int(p.value) for p in settings.points))
    allowed = raise_fd_limit(-(-needed // n))  # per process
    too_many = [p for p in settings.points if p.mode == "concurrency" and -(-int(p.value) // n) > allowed]
    if too_many:
        each = f" ({-(-int(too_many[0].value) // n)} per process)" if n > 1 else ""
        raise AiHowError(
            f"--concurrency {too_many[0].value:g} needs as many connections{each}; "
            f"the open-files limit allows {allowed} per process",
            fix="raise it (ulimit -n), raise --processes or lower --concurrency",
        )
    if open_loop and allowed * n < settings.max_in_flight:
        warning = f"open-files limit allows {allowed * n} connections: in-flight requests capped there"
        return dataclasses.replace(settings, max_in_flight=allowed * n), [warning]
    return settings, []


def warnings_for(
    points: list[dict[str, Any]], url: str, capacity: float | None, processes: int = 1
) -> list[str]:
    found = []
    where = f"{processes} load process" + ("es" if processes > 1 else "")
    for p in points:
        if p["client_bound"]:
            known = (
                f"; {where} drove at most ~{capacity:.0f} req/s against a trivial endpoint"
                if capacity
                else f" from {where}"
            )
            found.append(
                f"client-bound: {url} {p['point']} sent {p['send_rps']:.1f} req/s of {p['scheduled_rps']:.1f} "
                f"scheduled{known}; raise --processes (up to one per core) or split the load over machines"
            )
        if p["dropped"]:
            found.append(f"{url} {p['point']}: {p['dropped']} arrivals dropped at the in-flight cap")
    return found


def run_bench(
    target: Target,
    settings: Settings,
    compare: Target | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Measure every point against ``target`` (then ``compare``), in this process or spread over
    ``settings.processes`` load processes; the report document ``{"endpoint", "settings", "points",
    "compare", "client_capacity_rps", "gpu_note", "warnings"}``."""
    settings, warnings = fit_connections(settings)
    targets = [target] if compare is None else [target, compare]
    with contextlib.ExitStack() as stack:
        run_point: RunPoint = run_here
        if settings.processes > 1:
            from ai_how.bench.workers import LoadProcesses

            run_point = stack.enter_context(LoadProcesses(settings.processes))
        gpu = stack.enter_context(GpuSampler())
        measured = _measure(targets, settings, gpu, progress, run_point)
    for t, points in zip(targets, measured.points, strict=True):
        warnings += warnings_for(points, t.url, measured.capacity, settings.processes)
    base = measured.points[0]
    compared = None
    if compare is not None:
        compared = {
            "endpoint": describe(compare),
            "points": measured.points[1],
            "ratios": [
                {"point": mine["point"], **metrics.ratios(mine, theirs)}
                for mine, theirs in zip(base, measured.points[1], strict=True)
            ],
        }
    sampled = any(p["gpu"] for points in measured.points for p in points)
    return {
        "endpoint": describe(target),
        "settings": {
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "grace_s": settings.grace_s,
            "max_in_flight": settings.max_in_flight,
            "processes": settings.processes,
            "event_loop": loop_name(),
            "input_tokens": target.input_tokens,
            "output_tokens": target.output_tokens,
        },
        "points": base,
        "compare": compared,
        "client_capacity_rps": measured.capacity,
        "gpu_note": None if sampled else (gpu.note or NO_GPU),
        "warnings": warnings,
    }
