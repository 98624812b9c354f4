"""``ai-how status``: health across HPC, cloud, MLOps services, monitoring and the last pipeline runs."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config

_STYLE = {"ok": "[green]ok[/green]", "failing": "[red]failing[/red]", "unknown": "[yellow]unknown[/yellow]"}


def _table(report: object) -> Table:
    from ai_how.monitoring.status import StatusReport

    assert isinstance(report, StatusReport)
    table = Table(title="ai-how status", title_justify="left")
    for column in ("area", "component", "state", "detail"):
        table.add_column(column)
    for c in report.components:
        table.add_row(c.area, escape(c.name), _STYLE[c.state], escape(c.detail))
    return table


def status(
    ctx: typer.Context,
    config: ConfigOpt,
    watch: Annotated[
        float | None,
        typer.Option("--watch", help="Refresh every SECONDS until interrupted.", metavar="SECONDS", min=1),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """One table of health: VMs and SLURM (HPC), VMs and Kubernetes (cloud), MLflow, object store and
    model servers with their versions, Prometheus targets and firing alerts, the last pipeline runs.
    Exit 1 when anything is failing."""
    from ai_how.monitoring.status import collect

    loaded = load_valid_config(ctx, config)
    if watch is not None and not as_json:
        from rich.live import Live

        try:
            with Live(
                _table(collect(loaded, ctx.obj.store)), console=render.console, auto_refresh=False
            ) as live:
                while True:
                    time.sleep(watch)
                    live.update(_table(collect(loaded, ctx.obj.store)), refresh=True)
        except KeyboardInterrupt:
            pass
    report = collect(loaded, ctx.obj.store)
    if as_json:
        render.print_json(report.to_json())
    elif watch is None:
        render.console.print(_table(report))
    if not report.healthy:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
