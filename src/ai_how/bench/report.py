"""Bench reports for people: ``bench serve`` as terminal tables, markdown, JSON files and a latency-vs-throughput
plot; ``bench coldstart`` as a terminal table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Point = dict[str, Any]


def _ms(key: str, stat: str) -> Callable[[Point], str]:
    def cell(p: Point) -> str:
        values = p.get(key)
        return "-" if not values else f"{values[stat]:.1f}"

    return cell


def _number(key: str, fmt: str = "{:.1f}") -> Callable[[Point], str]:
    def cell(p: Point) -> str:
        value = p.get(key)
        return "-" if value is None else fmt.format(value)

    return cell


def _gpu(p: Point) -> str:
    if not p.get("gpu"):
        return "-"
    return ", ".join(
        f"{g['util_mean_pct']:.0f}% {g['mem_used_max_mib'] / 1024:.1f} GiB" for g in p["gpu"]["gpus"]
    )


def _sent(p: Point) -> str:
    sent = _number("send_rps")(p)
    return f"{sent} (client-bound)" if p.get("client_bound") else sent


# (header, cell) per column; latencies in ms.
COLUMNS: list[tuple[str, Callable[[Point], str]]] = [
    ("point", lambda p: str(p["point"])),
    ("sent/s", _sent),
    ("req/s", _number("requests_per_s")),
    ("ok", _number("ok", "{}")),
    ("errors", _number("errors", "{}")),
    ("429/503", _number("throttled", "{}")),
    ("timeouts", _number("timeouts", "{}")),
    ("dropped", _number("dropped", "{}")),
    ("p50 ms", _ms("latency_ms", "p50")),
    ("p95 ms", _ms("latency_ms", "p95")),
    ("p99 ms", _ms("latency_ms", "p99")),
    ("mean ms", _ms("latency_ms", "mean")),
    ("TTFT p50", _ms("ttft_ms", "p50")),
    ("TTFT p95", _ms("ttft_ms", "p95")),
    ("TPOT p50", _ms("tpot_ms", "p50")),
    ("ITL p50", _ms("itl_ms", "p50")),
    ("out tok/s", _number("output_tokens_per_s")),
    ("GPU util, mem", _gpu),
]


# Shown even when empty; the others (TTFT for an unstreamed run, GPU without NVML, ...) only when measured.
ALWAYS = {"point", "sent/s", "req/s", "ok", "errors", "429/503", "p50 ms", "p95 ms", "p99 ms", "mean ms"}


def columns(points: list[Point]) -> list[tuple[str, Callable[[Point], str]]]:
    return [(h, cell) for h, cell in COLUMNS if h in ALWAYS or any(cell(p) not in ("-", "0") for p in points)]


def rows(points: list[Point], shown: list[tuple[str, Callable[[Point], str]]]) -> list[list[str]]:
    return [[cell(p) for _, cell in shown] for p in points]


def _all_points(report: dict[str, Any]) -> list[Point]:
    return [p for _, points in _sections(report) for p in points]


def _title(endpoint: dict[str, Any]) -> str:
    stream = ", streamed" if endpoint["stream"] else ""
    return f"{endpoint['url']} ({endpoint['protocol']}{stream}, model {endpoint['model']})"


def _short(endpoint: dict[str, Any]) -> str:
    return f"{endpoint['url']} {endpoint['protocol']}"


def _endpoints(report: dict[str, Any]) -> list[tuple[dict[str, Any], list[Point]]]:
    found = [(report["endpoint"], report["points"])]
    if report.get("compare"):
        found.append((report["compare"]["endpoint"], report["compare"]["points"]))
    return found


def _sections(report: dict[str, Any]) -> list[tuple[str, list[Point]]]:
    return [(_title(endpoint), points) for endpoint, points in _endpoints(report)]


def notes(report: dict[str, Any]) -> list[str]:
    """Lines under the tables: GPU sampling, client capacity, warnings and the first failure reasons."""
    lines = []
    if report.get("gpu_note"):
        lines.append(str(report["gpu_note"]))
    if report.get("client_capacity_rps"):
        processes = report.get("settings", {}).get("processes", 1)
        spread = f" from {processes} load processes" if processes > 1 else ""
        lines.append(
            f"client capacity: ~{report['client_capacity_rps']:.0f} req/s against a trivial endpoint{spread}"
        )
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    for endpoint, points in _endpoints(report):
        for p in points:
            lines += [f"{_short(endpoint)} {p['point']}: {reason}" for reason in p.get("failures", [])]
    return lines


def _ratio_rows(report: dict[str, Any]) -> list[list[str]]:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    return [
        [r["point"], fmt(r["throughput_ratio"]), fmt(r["p95_ratio"])] for r in report["compare"]["ratios"]
    ]


RATIO_HEADER = ["point", "req/s (compare / base)", "P95 (compare / base)"]


def print_report(report: dict[str, Any], console: Console) -> None:
    shown = columns(_all_points(report))
    for title, points in _sections(report):
        table = Table(title=title, title_justify="left")
        for header, _ in shown:
            table.add_column(header, justify="left" if header == "point" else "right")
        for row in rows(points, shown):
            table.add_row(*row)
        console.print(table)
    if report.get("compare"):
        table = Table(title=f"{report['compare']['endpoint']['url']} relative to {report['endpoint']['url']}")
        for header in RATIO_HEADER:
            table.add_column(header)
        for row in _ratio_rows(report):
            table.add_row(*row)
        console.print(table)
    for line in notes(report):
        console.print(line, markup=False)


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body),
    ]


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# ai-how bench serve",
        "",
        f"{s['warmup_s']:g} s warm-up + {s['duration_s']:g} s per point; latencies in ms; "
        f"LLM requests: {s['input_tokens']} tokens in, {s['output_tokens']} out.",
    ]
    shown = columns(_all_points(report))
    for title, points in _sections(report):
        lines += ["", f"## {title}", "", *_md_table([h for h, _ in shown], rows(points, shown))]
    if report.get("compare"):
        lines += ["", "## Compared", "", *_md_table(RATIO_HEADER, _ratio_rows(report))]
    extra = notes(report)
    if extra:
        lines += ["", *(f"- {line}" for line in extra)]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """P50 and P95 latency against achieved req/s, one pair of lines per endpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for endpoint, points in _endpoints(report):
        measured = [p for p in points if p.get("latency_ms") and p.get("requests_per_s")]
        x = [p["requests_per_s"] for p in measured]
        name = _short(endpoint)
        (line,) = axes.plot(x, [p["latency_ms"]["p50"] for p in measured], "o-", label=f"{name} P50")
        axes.plot(
            x, [p["latency_ms"]["p95"] for p in measured], "s--", color=line.get_color(), label=f"{name} P95"
        )
    axes.set_xlabel("achieved throughput (req/s)")
    axes.set_ylabel("end-to-end latency (ms)")
    axes.set_title("latency vs throughput")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``bench.json``, ``bench.md`` and ``latency_vs_throughput.png`` in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "bench.json", out_dir / "bench.md", out_dir / "latency_vs_throughput.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths


COLDSTART_COLUMNS = [
    ("import", "import_s"),
    ("fetch+verify", "fetch_s"),
    ("weight load", "load_s"),
    ("warm-up/graphs", "warmup_s"),
    ("engine imports", "engine_import_s"),  # an engine process's, overlapping import and fetch
    ("device init", "engine_device_s"),
    ("to listening", "listening_s"),
    ("first response", "first_response_s"),
    ("total", "total_s"),
]


def print_coldstart(report: dict[str, Any], console: Console) -> None:
    """One row per run (seconds), then the median of the runs after the first (warm caches)."""
    table = Table(title=f"cold start of {report['name']} ({report['model_uri']}, device {report['device']})")
    table.add_column("run")
    for header, _ in COLDSTART_COLUMNS:
        table.add_column(f"{header} s", justify="right")

    def cells(values: dict[str, Any]) -> list[str]:
        unknown = "?" if values.get("import_s") is None else "-"  # no phases line, or no engine process
        return [unknown if values.get(key) is None else f"{values[key]:.2f}" for _, key in COLDSTART_COLUMNS]

    for run in report["runs"]:
        label = f"{run['run']} (cold cache)" if run["run"] == 1 else str(run["run"])
        table.add_row(label, *cells(run))
    if report.get("warm"):
        table.add_row("median of 2..", *cells(report["warm"]))
    console.print(table)
    if not all(run["phases_reported"] for run in report["runs"]):
        console.print("?: the server printed no startup-phases line, so its phases are unknown", markup=False)
    console.print(
        f"first request: {report['runs'][0]['request']}; first response = listening -> answer", markup=False
    )
