"""Options and helpers shared by commands (one definition each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.config.checking import check_file
from ai_how.config.loader import LoadedConfig
from ai_how.errors import AiHowError

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Cluster config, e.g. config/local.yaml.", show_default=False)
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON (progress goes to stderr).")
]


def load_valid_config(ctx: typer.Context, path: Path) -> LoadedConfig:
    """Load and validate the whole config; errors are printed with their fixes and end the command (exit 1)."""
    result = check_file(path, disk_path=ctx.obj.state_dir)
    errors = [f for f in result.findings if f.severity == "error"]
    if errors or result.report is None:
        render.findings(errors, source=str(path))
        raise AiHowError(f"{path} is invalid ({len(errors)} errors)", fix=f"run `ai-how validate {path}`")
    return result.report.loaded
