"""``ai-how exporter slurm|pipeline``: Prometheus exporters for SLURM and for the pipeline's state."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import load_valid_config
from ai_how.errors import AiHowError

exporter_app = typer.Typer(help="Prometheus exporters (SLURM, pipeline runs).", no_args_is_help=True)

HostOpt = Annotated[
    str, typer.Option("--host", help="Address to listen on (0.0.0.0 for a Prometheus on another machine).")
]


def _ready(url: str) -> None:
    render.err_console.print(f"serving metrics at {url}", markup=False)


def _ai_how_path() -> Path:
    """The absolute path of this ai-how (the console script beside this Python, or the one on PATH)."""
    beside = Path(sys.executable).parent / "ai-how"
    if beside.exists():
        return beside.absolute()
    found = shutil.which("ai-how")
    if found is None:
        raise AiHowError("cannot find the ai-how executable", fix="install ai-how (`make setup`) and retry")
    return Path(found).absolute()


@exporter_app.command("slurm")
def slurm(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve /metrics on.")] = 9341,
    host: HostOpt = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Cluster config: SLURM is read over SSH from clusters.hpc.slurm.login when set "
            "(default: sinfo/squeue on this machine).",
            show_default=False,
        ),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds sinfo/squeue may take per scrape.")
    ] = 10,
    systemd_unit: Annotated[
        bool,
        typer.Option("--systemd-unit", help="Print a systemd unit that runs this exporter, and exit."),
    ] = False,
) -> None:
    """Serve SLURM nodes, CPUs, GPUs (GRES) and the job queue as Prometheus metrics (SckyzO/slurm_exporter names)."""
    if systemd_unit:
        from ai_how.monitoring.exporters.systemd import slurm_exporter_unit

        unit = slurm_exporter_unit(
            _ai_how_path(), host=host, port=port, config=config.absolute() if config else None
        )
        typer.echo(unit, nl=False)
        return
    from ai_how.monitoring.exporters.serve import serve
    from ai_how.monitoring.exporters.slurm import slurm_registry
    from ai_how.slurm.transport import LocalTransport, Transport, transport_for

    transport: Transport = LocalTransport()
    if config is not None:
        hpc = load_valid_config(ctx, config).config.clusters.hpc
        if hpc is not None:
            transport = transport_for(hpc.slurm.login, hpc.slurm.ssh_options)
    serve(slurm_registry(transport, timeout_s), host, port, on_ready=_ready)


@exporter_app.command("pipeline")
def pipeline(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve /metrics on.")] = 9342,
    host: HostOpt = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Cluster config whose shared storage holds the jobs' progress.jsonl "
            "(default: the config each run was started with).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve pipeline runs, stages, syncs, production versions and training progress from the state directory."""
    from ai_how.monitoring.exporters.pipeline import pipeline_registry
    from ai_how.monitoring.exporters.serve import serve

    if config is not None:
        load_valid_config(ctx, config)  # a broken --config fails now, not silently at every scrape
    serve(
        pipeline_registry(ctx.obj.state_dir, config.absolute() if config else None),
        host,
        port,
        on_ready=_ready,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(exporter_app, name="exporter")
