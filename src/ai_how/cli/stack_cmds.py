"""``ai-how stack up|down|status``: the local MLOps services (MLflow, an S3 endpoint)."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config
from ai_how.layout import Layout
from ai_how.stack import services

stack_app = typer.Typer(help="Start, stop and inspect the local MLOps services.", no_args_is_help=True)


def _show(statuses: list[services.ServiceStatus], as_json: bool) -> None:
    if as_json:
        render.print_json([asdict(s) for s in statuses])
        return
    table = Table()
    for column in ("service", "url", "pid", "health", "note"):
        table.add_column(column)
    for s in statuses:
        health = "[green]healthy[/green]" if s.healthy else "[red]down[/red]"
        table.add_row(s.name, s.url, str(s.pid or "-"), health, s.note or ("" if s.managed else "external"))
    render.console.print(table if statuses else "No local services are configured.")


@stack_app.command("up")
def up(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Start the configured services (idempotent) and wait until each is healthy."""
    loaded = load_valid_config(ctx, config)
    with render.progress(as_json, "starting services"):
        statuses = services.up(loaded.config, Layout(ctx.obj.state_dir))
    _show(statuses, as_json)


@stack_app.command("down")
def down(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Stop the services ai-how started. Their data (MLflow database, artifacts) stays on disk."""
    loaded = load_valid_config(ctx, config)
    stopped = services.down(loaded.config, Layout(ctx.obj.state_dir))
    if as_json:
        render.print_json({"stopped": stopped})
    else:
        render.console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def status(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Show each service's URL, pid and health. Exit 1 if a configured service is down."""
    loaded = load_valid_config(ctx, config)
    statuses = services.status(loaded.config, Layout(ctx.obj.state_dir))
    _show(statuses, as_json)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
