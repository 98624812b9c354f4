"""``ai-how monitoring render``: Prometheus, Alertmanager, Grafana and kube-prometheus-stack files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config
from ai_how.errors import AiHowError

monitoring_app = typer.Typer(
    help="Generated monitoring configuration: rules, alerts, dashboards.", no_args_is_help=True
)


@monitoring_app.command("render")
def render_cmd(
    ctx: typer.Context,
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the files to.")],
    for_override: Annotated[
        str | None,
        typer.Option(
            "--for-override",
            help="Replace every alert's 'for:' (e.g. 10s for an end-to-end test).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write prometheus.yml with its rule files, alertmanager.yml, Grafana dashboards and provisioning, and
    (with clusters.cloud) kube-prometheus-stack values, PrometheusRules, Pod/ServiceMonitors, dashboard
    ConfigMaps and the Alertmanager config Secret. No secret value is written: receivers read files the
    stack fills from the environment variables the config names."""
    from ai_how.monitoring.render import write_render

    if for_override is not None and not re.fullmatch(r"\d+(ms|s|m|h)", for_override):
        raise AiHowError(f"--for-override {for_override!r} is not a duration", fix="use e.g. 10s or 1m")
    loaded = load_valid_config(ctx, config)
    override = for_override if for_override is not None else loaded.config.monitoring.alert_for
    written = write_render(loaded.config, out, state_dir=ctx.obj.state_dir, for_override=override)
    if as_json:
        render.print_json({"out": str(out), "files": [str(p.relative_to(out)) for p in written]})
    else:
        render.console.print(f"wrote {len(written)} files to {escape(str(out))}")


def register(app: typer.Typer) -> None:
    app.add_typer(monitoring_app, name="monitoring")
