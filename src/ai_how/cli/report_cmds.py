"""``ai-how report RUN``: a pipeline run for people, as a few terminal lines or one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ai_how.cli import render
from ai_how.cli.common import JsonOpt, load_valid_config
from ai_how.errors import AiHowError


def _config_sources(
    ctx: typer.Context, config: Path | None, doc: dict[str, Any]
) -> tuple[str | None, str | None]:
    """(tracking URI, shared root) from -c CONFIG, else from the config the run recorded (when it still exists)."""
    from ai_how.executors.base import shared_root
    from ai_how.tracking import tracking_uri_of

    path = config if config is not None else Path(str(doc.get("config", "")))
    if config is None and not path.is_file():
        return None, None  # the training section says: pass -c CONFIG
    loaded = load_valid_config(ctx, path)
    return tracking_uri_of(loaded.config), shared_root(loaded.config, ctx.obj.state_dir)


def report(
    ctx: typer.Context,
    run_id: Annotated[
        str, typer.Argument(metavar="RUN", help="A run id, or 'latest' for the newest run.")
    ] = "latest",
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Cluster config (default: the one the run was started with)."),
    ] = None,
    as_html: Annotated[
        bool, typer.Option("--html", help="Write the HTML page (default <state>/reports/<run>.html).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the HTML page here instead (implies --html).")
    ] = None,
    bench: Annotated[
        Path | None,
        typer.Option("--bench", help="An `ai-how bench serve --json` result: adds latency by load point."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarise a pipeline run: stage timeline, training curves (from MLflow, else the job's
    progress.jsonl), sync, deploy, verify and latency. With --html, one page that works offline
    (charts inlined, no scripts, no external links)."""
    from ai_how.fsutil import atomic_write_text
    from ai_how.monitoring import report as reports

    doc = reports.load_run(ctx.obj.store, run_id)
    bench_doc = reports.load_bench(bench) if bench is not None else None
    tracking_uri, shared = _config_sources(ctx, config, doc)
    with render.stdout_to_stderr(as_json):  # MLflow's client may print
        built = reports.build_report(
            doc,
            tracking_uri=tracking_uri,
            job_dir=reports.training_dir(doc, shared),
            bench=bench_doc,
            bench_path=bench,
        )
    path: Path | None = None
    if as_html or out is not None:
        from ai_how.monitoring.report_html import render_page

        path = out if out is not None else reports.default_path(ctx.obj.state_dir, built.run_id)
        try:
            atomic_write_text(path, render_page(built))
        except OSError as exc:
            raise AiHowError(
                f"cannot write {path}: {exc.strerror or exc}", fix="pick another -o FILE"
            ) from None
    sections = built.sections()
    if as_json:
        render.print_json(
            {
                "run_id": built.run_id,
                "status": doc.get("status"),
                "path": str(path) if path else None,
                "training_source": built.training.source or None,
                "sections": [name for name, why in sections.items() if why is None],
                "missing": {name: why for name, why in sections.items() if why is not None},
            }
        )
        return
    for line in reports.text_summary(built):
        render.console.print(line, markup=False)
    if path is not None:
        render.console.print(f"wrote {path}", markup=False)
    else:
        render.console.print(f"the page with charts: ai-how report {built.run_id} --html", markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
