"""``ai-how monitoring open``: the MLflow UI, Prometheus, Alertmanager and the latest run report: each one
that answers is printed and, where there is a browser, opened; each one that does not says how to start it.

Registered on the ``monitoring`` group that ``monitoring_cmds`` defines, so both live under one name.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config


def open_cmd(
    ctx: typer.Context,
    config: ConfigOpt,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the URLs.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the MLflow UI, Prometheus, Alertmanager and the latest report, and open them in a browser.

    Each one that answers is printed, and opened when there is a display or $BROWSER; each one that
    does not says how to start it. Exits 0 either way."""
    from ai_how.monitoring.web_uis import browser_available, open_in_browser, web_uis

    loaded = load_valid_config(ctx, config)
    uis = web_uis(loaded.config, ctx.obj.state_dir)
    browser = not no_browser and not as_json and browser_available()
    if browser:
        open_in_browser(uis)
    if as_json:
        render.print_json({"browser": browser, "uis": [ui.to_json() for ui in uis]})
        return
    for ui in uis:
        if ui.up:
            opened = " [dim](opened)[/dim]" if ui.opened else ""
            render.console.print(f"[green]✓[/green] {ui.name:<18} {escape(ui.url)}{opened}")
        else:
            where = f"{escape(ui.url)}: not answering; " if ui.url else ""
            render.console.print(f"[red]✗[/red] {ui.name:<18} {where}{escape(ui.hint)}")
    if not any(ui.up for ui in uis):
        render.console.print("nothing to open yet")
    elif not browser:
        render.console.print("no browser here (no $DISPLAY or $BROWSER): open the URLs above yourself")


def register(app: typer.Typer) -> None:
    from ai_how.cli.monitoring_cmds import monitoring_app

    monitoring_app.command("open")(open_cmd)
