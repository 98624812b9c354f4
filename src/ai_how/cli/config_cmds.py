"""``ai-how validate``, ``ai-how plan`` and ``ai-how config schema``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.config.checking import CheckResult, check_file
from ai_how.config.models import ClusterConfig
from ai_how.errors import ExitCode, UnreadableInputError
from ai_how.fsutil import atomic_write_text
from ai_how.provision import gpu_owners

ConfigArg = Annotated[
    Path, typer.Argument(help="Path of the cluster config (e.g. config/local.yaml).", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Allow requests beyond the host's capacity (as warnings).")
]

config_app = typer.Typer(help="Inspect the cluster config format.", no_args_is_help=True)


def _check(ctx: typer.Context, config: Path, force: bool, as_json: bool) -> CheckResult:
    try:
        return check_file(config, force=force, disk_path=ctx.obj.state_dir)
    except UnreadableInputError as exc:
        if as_json:
            render.print_json({"valid": False, "config": str(config), "unreadable": True, "error": str(exc)})
            raise typer.Exit(int(exc.exit_code)) from None
        raise


def validate(
    ctx: typer.Context, config: ConfigArg, as_json: JsonOpt = False, force: ForceOpt = False
) -> None:
    """Validate a cluster config as a whole. Exit 0 valid, 1 invalid, 2 unreadable."""
    result = _check(ctx, config, force, as_json)
    if as_json:
        render.print_json(result.to_json())
    else:
        render.findings(result.findings, source=str(config))
        if result.report is not None:
            render.validation_summary(result.report)
        else:
            render.console.print(f"{config}: [red]invalid[/red] ({len(result.findings)} errors)")
    raise typer.Exit(int(ExitCode.OK if result.valid else ExitCode.FAILED))


def plan(ctx: typer.Context, config: ConfigArg, as_json: JsonOpt = False, force: ForceOpt = False) -> None:
    """Show the topology and resource allocation of both clusters (VMs, cores, RAM, disk, GPUs, sharing)."""
    result = _check(ctx, config, force, as_json)
    owners = gpu_owners.owners(ctx.obj.store)
    if as_json:
        data = result.to_json()
        data["plan"] = result.report.plan.to_json() if result.report else None
        data["gpu_owners"] = [asdict(o) for o in owners]
        render.print_json(data)
    else:
        if result.report is not None:
            render.plan(result.report.plan)
        for owner in owners:
            render.console.print(f"GPU {owner.pci_address}: now owned by {owner.holder} (started by ai-how)")
        problems = [f for f in result.findings if f.severity != "info"]
        render.findings(problems, source=str(config))
        if not result.valid:
            render.console.print(f"{config}: [red]invalid[/red]: run `ai-how validate {config}` for details")
    raise typer.Exit(int(ExitCode.OK if result.valid else ExitCode.FAILED))


@config_app.command("schema")
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of cluster.yaml (for editors and CI linters)."""
    text = json.dumps(ClusterConfig.model_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        render.console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("plan")(plan)
    app.add_typer(config_app, name="config")
