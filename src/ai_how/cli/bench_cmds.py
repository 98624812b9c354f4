"""``ai-how bench serve|coldstart``: load-test a model server, time a model server's cold start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import JsonOpt
from ai_how.errors import AiHowError

bench_app = typer.Typer(
    help="Load-test model servers (ai-how, KServe, vLLM or any OpenAI server) and time cold starts.",
    no_args_is_help=True,
)


def parse_points(option: str, text: str, integer: bool) -> list[float]:
    """``"1,2,4"`` -> [1, 2, 4]; one error line for anything but positive numbers."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 or (integer and v != int(v)) for v in values):
        kind = "positive integers" if integer else "positive numbers"
        raise AiHowError(f"{option} {text!r} must be {kind} separated by commas", fix=f"e.g. {option} 1,4,16")
    return values


def parse_processes(text: str) -> int:
    """``--processes``: a positive integer, or ``auto`` (one per core, at most 16)."""
    if text.strip() == "auto":
        import os

        from ai_how.bench.workers import MAX_AUTO

        return min(os.cpu_count() or 1, MAX_AUTO)
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise AiHowError(
            f"--processes {text!r} must be a positive integer or auto",
            fix="e.g. --processes 8, or --processes auto (one per core, at most 16)",
        )
    return count


def _check(ok: bool, message: str, fix: str) -> None:
    if not ok:
        raise AiHowError(message, fix=fix)


def _protocol(option: str, value: str) -> str:
    from ai_how.bench.payloads import PROTOCOLS

    _check(
        value in PROTOCOLS, f"{option} {value!r} is not one of {', '.join(PROTOCOLS)}", f"e.g. {option} v1"
    )
    return value


def _url(option: str, value: str) -> str:
    from ai_how.bench.payloads import split_url

    try:
        split_url(value)
    except ValueError as exc:
        raise AiHowError(f"{option}: {exc}", fix=f"e.g. {option} http://127.0.0.1:8080") from None
    return value


@bench_app.command("serve")
def serve(
    url: Annotated[
        str, typer.Option("--url", help="Server base URL, e.g. http://127.0.0.1:8080.", show_default=False)
    ],
    model: Annotated[
        str, typer.Option("--model", help="Model name in the protocol paths/bodies.", show_default=False)
    ],
    duration: Annotated[
        float, typer.Option("--duration", help="Measured seconds per load point.", show_default=False)
    ],
    concurrency: Annotated[
        str | None,
        typer.Option(
            "--concurrency", help="Closed loop: N workers, each sends when its last answer came (N[,N...])."
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Open loop: Poisson arrivals at R req/s (R[,R...]), in flight capped."),
    ] = None,
    protocol: Annotated[
        str, typer.Option("--protocol", help="openai-completions | openai-chat | v1 | v2 | mlflow.")
    ] = "openai-completions",
    stream: Annotated[
        bool, typer.Option("--stream", help="Stream OpenAI responses (SSE): adds TTFT, TPOT and ITL.")
    ] = False,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Second server: the same points after URL, with ratios.")
    ] = None,
    compare_protocol: Annotated[
        str | None, typer.Option("--compare-protocol", help="Protocol of --compare (default: --protocol).")
    ] = None,
    compare_model: Annotated[
        str | None, typer.Option("--compare-model", help="Model name at --compare (default: --model).")
    ] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Prompt length of LLM requests.")] = 32,
    output_tokens: Annotated[
        int, typer.Option("--output-tokens", help="max_tokens of LLM requests (ignore_eos set).")
    ] = 64,
    warmup: Annotated[
        float, typer.Option("--warmup", help="Seconds of load before each measured window.")
    ] = 1.0,
    grace: Annotated[
        float,
        typer.Option("--grace", help="Seconds in-flight requests get after a window before they time out."),
    ] = 30.0,
    max_in_flight: Annotated[
        int,
        typer.Option("--max-in-flight", help="Open loop: arrivals beyond this many in flight are dropped."),
    ] = 10_000,
    processes: Annotated[
        str,
        typer.Option(
            "--processes",
            help="Load processes per point, each driving 1/N of the rate or concurrency "
            "(N or auto: one per core, at most 16).",
        ),
    ] = "1",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write bench.json, bench.md and latency_vs_throughput.png here."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure latency and throughput of a model server at each load point.

    Per point: requests/s (successes / wall time), P50/P95/P99/mean end-to-end latency, output
    tokens/s, errors, 429/503 answers (counted apart; a closed-loop worker sleeps for their
    Retry-After), timeouts and drops; with --stream also TTFT, TPOT = (E2E - TTFT)/(tokens - 1) and
    ITL. OpenAI URLs with a path are the OpenAI base (vLLM: http://host:8000/v1); a bare URL means
    /openai/v1 (ai-how, KServe). GPU utilisation and memory are sampled through NVML (nvidia-ml-py)
    on the machine the benchmark runs on, so they describe the server only when run on its GPU host.

    One load process drives ~0.5-1k non-streamed requests/s at most (far fewer streamed ones):
    --processes N spreads each point over N processes started together (N Poisson streams at R/N
    req/s, or C/N connections each), and the figures are computed over all their requests. An
    open-loop point that sends below 90 % of its schedule is reported as client-bound, next to what
    the N processes drive against a trivial endpoint.
    """
    from ai_how.bench import report as reports
    from ai_how.bench.loadgen import Target
    from ai_how.bench.records import LoadPoint
    from ai_how.bench.serve import Settings, run_bench

    _check(
        (concurrency is None) != (rate is None),
        "give exactly one of --concurrency and --rate",
        "e.g. --concurrency 1,8,32 (closed loop) or --rate 5,20 (open loop, req/s)",
    )
    points = (
        [LoadPoint("concurrency", v) for v in parse_points("--concurrency", concurrency, True)]
        if concurrency is not None
        else [LoadPoint("rate", v) for v in parse_points("--rate", rate or "", False)]
    )
    _check(duration > 0, f"--duration {duration:g} must be positive", "e.g. --duration 30")
    _check(warmup >= 0 and grace >= 0, "--warmup and --grace must be 0 or more seconds", "e.g. --warmup 2")
    _check(max_in_flight >= 1, "--max-in-flight must be at least 1", "e.g. --max-in-flight 10000")
    load_processes = parse_processes(processes)
    _check(
        input_tokens >= 1 and output_tokens >= 1,
        "--input-tokens and --output-tokens must be at least 1",
        "e.g. --input-tokens 32 --output-tokens 64",
    )
    protocols = [_protocol("--protocol", protocol)]
    if compare is not None:
        protocols.append(_protocol("--compare-protocol", compare_protocol or protocol))
    if stream:
        from ai_how.bench.payloads import OPENAI_PROTOCOLS

        _check(
            all(p in OPENAI_PROTOCOLS for p in protocols),
            "--stream applies to the OpenAI protocols only",
            "use --protocol openai-completions or openai-chat, or leave out --stream",
        )

    def target(where: str, name: str, kind: str) -> Target:
        return Target(where, name, kind, stream, input_tokens, output_tokens)

    base = target(_url("--url", url), model, protocols[0])
    other = target(_url("--compare", compare), compare_model or model, protocols[1]) if compare else None
    settings = Settings(tuple(points), duration, warmup, grace, max_in_flight, load_processes)
    quiet = as_json or not render.err_console.is_terminal

    def progress(message: str) -> None:
        if not quiet:
            render.err_console.print(message, markup=False)

    document = run_bench(base, settings, other, progress)
    written = reports.write(document, out) if out is not None else []
    if as_json:
        render.print_json(document)
        return
    reports.print_report(document, render.console)
    for path in written:
        render.console.print(f"wrote {path}", markup=False)


@bench_app.command("coldstart")
def coldstart(
    model_uri: Annotated[
        str,
        typer.Option(
            "--model-uri", help="A synced model version (s3://... or file://...).", show_default=False
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Model name the server serves.", show_default=False)],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Cluster config (object-store endpoint/credentials)."),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", help="Cold starts; the first is reported apart.")] = 3,
    device: Annotated[
        str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (through CUDA_VISIBLE_DEVICES).")
    ] = "auto",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds one start may take to answer.")
    ] = 900.0,
    as_json: JsonOpt = False,
) -> None:
    """Time a model server from process start to its first answer, phase by phase.

    Phases: import, fetch + sha256 verify, weight load, warm-up/graph capture (as the server reports
    them in its `startup-phases` line; `?` when it prints none), to listening, first response, total.
    Each run starts `python -m ai_how.serving.server` on a free port and sends its first request the
    moment the port accepts (an LLM: a streamed completion of 1 token; a classifier: one V1 predict),
    then stops it with SIGTERM. All runs share a fresh model cache, so run 1 fetches the files and the
    later runs show warm caches.
    """
    from ai_how.bench import report as reports
    from ai_how.bench.coldstart import coldstart as measure
    from ai_how.bench.coldstart import device_env

    _check(runs >= 1, f"--runs {runs} must be at least 1", "e.g. --runs 3")
    _check(timeout > 0, "--timeout must be positive", "e.g. --timeout 900")
    device_env(device)  # a bad --device fails here, before any server starts
    if config is not None and not config.is_file():
        raise AiHowError(
            f"--config {config}: no such file", fix="give the cluster config, e.g. config/local.yaml"
        )
    quiet = as_json or not render.err_console.is_terminal

    def progress(message: str) -> None:
        if not quiet:
            render.err_console.print(message, markup=False)

    document = measure(
        model_uri, name, config=config, runs=runs, device=device, timeout_s=timeout, progress=progress
    )
    if as_json:
        render.print_json(document)
    else:
        reports.print_coldstart(document, render.console)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
