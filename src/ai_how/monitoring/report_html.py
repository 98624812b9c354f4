"""A run report as one self-contained HTML page: inline CSS, charts as data: URIs, every text escaped,
no script and no external reference, so it opens offline, from a mail attachment or a CI artifact."""

from __future__ import annotations

import functools
import html
import statistics
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ai_how import __version__
from ai_how.monitoring import charts
from ai_how.monitoring.report import RunReport, StageRow, human_bytes, stage_headline

TITLES = {
    "stages": "Stage timeline",
    "training": "Training curves",
    "sync": "Sync",
    "deploy": "Deploy and promote",
    "verify": "Verify",
    "latency": "Latency",
}
_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "running": "#f9a825",
    "interrupted": "#ef6c00",
    "skipped": "#90a4ae",
    "pending": "#cfd8dc",
}
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:1rem 2rem}header h1{margin:0 0 .3rem;font-size:1.4rem}
header p{margin:.2rem 0;color:#cfd8dc}nav{padding:.5rem 2rem;background:#eceff1}
nav a{margin-right:1rem;color:#37474f}main{padding:0 2rem 2rem;max-width:1200px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:1rem 1.5rem;margin-top:1.2rem}
h2{margin-top:0;font-size:1.15rem}table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
td,th{border-bottom:1px solid #eee;padding:.3rem .7rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#777;font-style:italic}.ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.status{display:inline-block;padding:0 .5rem;border-radius:3px;color:#fff;font-size:.85rem}
.timeline{margin:.8rem 0}.lane{display:flex;align-items:center;height:1.7rem}
.lane .name{width:7rem;font-size:.9rem}.lane .track{flex:1;position:relative;height:1.1rem;background:#f5f5f5}
.lane .bar{position:absolute;top:0;height:100%;border-radius:2px;min-width:2px}
.lane .secs{width:6rem;text-align:right;font-size:.85rem;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}figcaption{font-size:.85rem;color:#555}
code{font-size:.85rem;background:#f5f5f5;padding:0 .2rem}pre{white-space:pre-wrap;font-size:.85rem}
"""


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(why: str) -> str:
    return f'<p class="missing">{e(why)}</p>'


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: frozenset[int] = frozenset()
) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{e(c)}</td>' if i in numeric else f"<td>{e(c)}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(rows: Iterable[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def _image(draw: Callable[[], str], alt: str) -> str:
    """The chart as an <img> with a data: URI, or a line saying why it cannot be drawn."""
    try:
        uri = draw()
    except ModuleNotFoundError:
        return _missing(charts.MISSING)
    return f'<img src="{e(uri)}" alt="{e(alt)}">'


def _status(status: str) -> str:
    return f'<span class="status" style="background:{_COLOURS.get(status, "#999")}">{e(status)}</span>'


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


# --------------------------------------------------------------------------- sections


def stages_section(report: RunReport) -> str:
    now = datetime.now(UTC)
    spans: dict[str, tuple[float, float]] = {}
    timed = [(r, r.started) for r in report.stages if r.started is not None]
    origin = min((started for _, started in timed), default=now)
    previous_end = 0.0
    for row, started in timed:  # stages run one after another; timestamps have 1 s resolution
        length = row.duration_s if row.duration_s is not None else (now - started).total_seconds()
        start = max((started - origin).total_seconds(), previous_end)
        spans[row.name] = (start, max(0.0, float(length)))
        previous_end = start + spans[row.name][1]
    total = max((start + length for start, length in spans.values()), default=0.0) or 1.0
    lanes = []
    for row in report.stages:
        bar = ""
        if row.name in spans:
            start, length = spans[row.name]
            bar = (
                f'<div class="bar" style="left:{100 * start / total:.2f}%;width:{100 * length / total:.2f}%;'
                f'background:{_COLOURS.get(row.status, "#999")}" title="{e(row.status)}"></div>'
            )
        lanes.append(
            f'<div class="lane" data-stage="{e(row.name)}"><span class="name">{e(row.name)}</span>'
            f'<div class="track">{bar}</div><span class="secs">{e(_seconds(row.duration_s))} s</span></div>'
        )
    table = _table(
        ["stage", "status", "started", "seconds", "result"],
        (
            [
                row.name,
                row.status,
                row.started.isoformat(timespec="seconds") if row.started else "-",
                _seconds(row.duration_s),
                stage_headline(row),
            ]
            for row in report.stages
        ),
        numeric=frozenset({3}),
    )
    return f'<div class="timeline">{"".join(lanes)}</div><p>{e(f"{total:.1f}")} s from the first start to the last end</p>{table}'


def _curve_caption(metric: str, values: list[float]) -> str:
    return (
        f"{metric}: {len(values)} steps, first {values[0]:.4g}, last {values[-1]:.4g}, "
        f"min {min(values):.4g}, max {max(values):.4g}"
    )


def training_section(report: RunReport) -> str:
    train = report.outputs("train")
    parts = []
    if train:
        parts.append(
            _pairs(
                [
                    ("job", train.get("job_id", "-")),
                    ("MLflow run", train.get("mlflow_run_id", "-")),
                    ("model kind", train.get("kind", "-")),
                    ("model sha256", train.get("model_sha256", "-")),
                ]
            )
        )
    curves = report.training.curves
    if curves:
        figures = "".join(
            f'<figure class="chart" data-metric="{e(c.metric)}" data-points="{len(c.values)}">'
            f"{_image(functools.partial(charts.curve_png, c), f'{c.metric} by step')}"
            f"<figcaption>{e(_curve_caption(c.metric, c.values))}</figcaption></figure>"
            for c in curves
        )
        parts.append(f'<p>from {e(report.training.source)}</p><div class="charts">{figures}</div>')
    for note in report.training.notes:
        parts.append(_missing(note))
    final = {k: v for k, v in (train.get("metrics") or {}).items() if isinstance(v, int | float)}
    if final:
        parts.append(
            "<h3>Final metrics</h3>"
            + _table(["metric", "value"], ([k, f"{v:.6g}"] for k, v in final.items()), frozenset({1}))
        )
    return "".join(parts)


def sync_section(report: RunReport) -> str:
    out = report.outputs("sync")
    if not out:
        return _missing(report.sections()["sync"] or "")
    uploaded, skipped = out.get("uploaded", []), out.get("skipped", [])
    seconds = float(out.get("duration_s") or 0)
    sent = int(out.get("bytes_uploaded") or 0)
    rate = f"{human_bytes(sent / seconds)}/s" if seconds > 0 and sent else "-"
    return _pairs(
        [
            ("destination", out.get("uri", "-")),
            ("files", f"{len(uploaded) + len(skipped)} ({len(uploaded)} uploaded, {len(skipped)} unchanged)"),
            ("stale or deleted", len(out.get("stale", [])) + len(out.get("deleted", []))),
            ("bytes uploaded", f"{human_bytes(sent)} ({sent} bytes)"),
            ("duration", f"{seconds:.3f} s"),
            ("throughput", rate),
            ("manifest sha256", out.get("manifest_sha256") or out.get("manifest_digest", "-")),
        ]
    )


def deploy_section(report: RunReport) -> str:
    deploy, promote = report.outputs("deploy"), report.outputs("promote")
    if not deploy:
        return _missing(report.sections()["deploy"] or "")
    rows = [
        ("backend", deploy.get("backend", "-")),
        ("candidate endpoint", deploy.get("endpoint", "-")),
        ("ready after", f"{_seconds(deploy.get('ready_seconds'))} s"),
        ("InferenceService manifest", deploy.get("inferenceservice", "-")),
    ]
    if promote:
        rows += [
            (
                "production",
                f"{promote.get('model_name')} v{promote.get('version')} at {promote.get('endpoint')}",
            ),
            ("previous production", promote.get("previous_production") or "none"),
            ("switch took", f"{_seconds(promote.get('switch_seconds'))} s"),
        ]
    else:
        rows.append(("production", "not promoted by this run"))
    return _pairs(rows)


def verify_section(report: RunReport) -> str:
    checks = report.outputs("verify").get("checks") or []
    failed = next((s for s in report.stages if s.name == "verify" and s.status == "failed"), None)
    if not checks:
        if failed is not None:
            return f"<pre>{e(failed.error or 'failed')}</pre>"
        return _missing(report.sections()["verify"] or "")
    passed = sum(bool(c.get("ok")) for c in checks)
    rows = "".join(
        f'<tr><td class="{"ok" if c.get("ok") else "bad"}">{"✓" if c.get("ok") else "✗"}</td>'
        f"<td>{e(c.get('name', ''))}</td><td>{e(c.get('detail', ''))}</td></tr>"
        for c in checks
    )
    return (
        f"<p>{passed}/{len(checks)} checks passed</p><table><thead><tr><th></th><th>check</th><th>detail</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _quantile(ordered: list[float], q: int) -> float:
    return statistics.quantiles(ordered, n=100, method="inclusive")[q - 1] if len(ordered) > 1 else ordered[0]


def latency_section(report: RunReport) -> str:
    latency = report.latency
    parts = []
    if latency.samples_ms:
        ordered = sorted(latency.samples_ms)
        parts.append(
            f"<h3>Request latency, from {e(latency.samples_source)}</h3>"
            + _image(lambda: charts.histogram_png(ordered), "latency histogram")
            + _table(
                ["requests", "P50 ms", "P95 ms", "P99 ms", "max ms"],
                [
                    [
                        len(ordered),
                        *(f"{_quantile(ordered, q):.1f}" for q in (50, 95, 99)),
                        f"{ordered[-1]:.1f}",
                    ]
                ],
                frozenset(range(5)),
            )
        )
    if latency.points:
        parts.append(
            f"<h3>Latency by load point, from {e(latency.points_source)}</h3>"
            + _image(lambda: charts.percentiles_png(latency.points), "latency percentiles by load point")
            + _table(
                ["endpoint", "point", "req/s", "P50 ms", "P95 ms", "P99 ms", "mean ms"],
                (
                    [
                        p.endpoint,
                        p.point,
                        "-" if p.requests_per_s is None else f"{p.requests_per_s:.1f}",
                        *(f"{v:.1f}" for v in (p.p50, p.p95, p.p99, p.mean)),
                    ]
                    for p in latency.points
                ),
                frozenset(range(2, 7)),
            )
        )
    if not parts:
        parts = [_missing(note) for note in latency.notes]
    return "".join(parts)


SECTIONS: dict[str, Callable[[RunReport], str]] = {
    "stages": stages_section,
    "training": training_section,
    "sync": sync_section,
    "deploy": deploy_section,
    "verify": verify_section,
    "latency": latency_section,
}


def _header(report: RunReport, row: StageRow | None) -> str:
    doc = report.run
    failed = f"<p>failed in {e(row.name)}: {e(row.error or '')}</p>" if row is not None else ""
    return (
        f"<header><h1>ai-how run {e(report.run_id)}</h1>"
        f"<p>{_status(str(doc.get('status')))} workload {e(doc.get('workload'))}, model "
        f"{e(doc.get('model_name'))}, created {e(doc.get('created'))}</p>"
        f"<p>config {e(doc.get('config'))}</p>{failed}</header>"
    )


def render_page(report: RunReport) -> str:
    """The whole page (UTF-8 HTML5)."""
    failed = next((r for r in report.stages if r.status == "failed"), None)
    nav = "".join(f'<a href="#{name}">{e(title)}</a>' for name, title in TITLES.items())
    body = "".join(
        f'<section id="{name}"><h2>{e(TITLES[name])}</h2>{draw(report)}</section>'
        for name, draw in SECTIONS.items()
    )
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ai-how run {e(report.run_id)}</title><style>{_CSS}</style></head><body>"
        f"{_header(report, failed)}<nav>{nav}</nav><main>{body}"
        f'<p class="missing">written by ai-how {e(__version__)} at {e(generated)}</p></main></body></html>\n'
    )
