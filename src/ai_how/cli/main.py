"""The ``ai-how`` root command: global options, error handling, sub-command registration.

Command modules only parse options, call the core and render; heavy libraries
(torch, mlflow, kserve, ...) are imported inside the core functions that need them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from ai_how import __version__
from ai_how.cli import render
from ai_how.errors import AiHowError, ExitCode
from ai_how.extras import missing_extra
from ai_how.state.store import StateStore, default_state_dir


@dataclass
class AppContext:
    state_dir: Path
    debug: bool = False

    @property
    def store(self) -> StateStore:
        return StateStore(self.state_dir)


class AiHowGroup(TyperGroup):
    """Turns expected failures into one-line messages and exit codes, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AiHowError as exc:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            render.error_line(exc.message, exc.fix)
            raise click.exceptions.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            render.error_line("interrupted")
            raise click.exceptions.Exit(int(ExitCode.INTERRUPTED)) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # `ai-how ... | head`: the reader left; stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except Exception as exc:  # an unexpected failure still ends in one line, not a traceback
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            missing = missing_extra(exc) if isinstance(exc, ModuleNotFoundError) else None
            if missing is not None:  # an optional dependency is not installed: name the extra
                render.error_line(missing.message, missing.fix)
            else:
                render.error_line(
                    f"internal error: {type(exc).__name__}: {exc}",
                    "re-run with --debug for the traceback and report it",
                )
            raise click.exceptions.Exit(int(ExitCode.FAILED)) from None


app = typer.Typer(
    name="ai-how",
    cls=AiHowGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="A hyperscaler's ML workflow on one workstation: train (local or SLURM) → register (MLflow) → "
    "sync (S3, sha256-verified) → deploy (local server or KServe) → verify.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ai-how {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="AI_HOW_STATE_DIR",
            help="Where ai-how keeps its state (default: ~/.ai-how).",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = AppContext(state_dir=(state_dir or default_state_dir()).expanduser(), debug=debug)


def _register() -> None:
    from ai_how.cli import (
        bench_cmds,
        cluster_cmds,
        config_cmds,
        deploy_cmds,
        evaluate_cmds,
        exporter_cmds,
        image_cmds,
        monitoring_cmds,
        monitoring_open_cmds,
        oumi_cmds,
        pipeline_cmds,
        report_cmds,
        stack_cmds,
        status_cmds,
        sync_cmds,
    )

    for module in (
        config_cmds,
        stack_cmds,
        pipeline_cmds,
        deploy_cmds,
        sync_cmds,
        evaluate_cmds,
        oumi_cmds,
        bench_cmds,
        cluster_cmds,
        image_cmds,
        status_cmds,
        exporter_cmds,
        monitoring_cmds,
        monitoring_open_cmds,
        report_cmds,
    ):
        module.register(app)


_register()


def run() -> None:
    """Console-script entry point."""
    app()
