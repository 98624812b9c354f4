"""``ai-how oumi config``: run Oumi jobs on the ai-how SLURM cluster (``resources.cloud: ai-how``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config

oumi_app = typer.Typer(help="Use the ai-how cluster from Oumi's launcher.", no_args_is_help=True)


@oumi_app.command("config")
def config(
    ctx: typer.Context,
    config: ConfigOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the Oumi files.")] = Path(
        "oumi"
    ),
    gpus: Annotated[int, typer.Option(help="GPUs per node the job asks for.", min=0)] = 0,
    max_steps: Annotated[int, typer.Option(help="Training steps of the sample job.", min=1)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Write oumi_config.yaml (TrainingConfig), job.yaml (JobConfig, cloud ai-how), oumi_extra_deps.txt and env.sh."""
    from ai_how.integrations.oumi_setup import write_oumi_config

    loaded = load_valid_config(ctx, config)
    with render.progress(as_json, "writing Oumi configs"):
        files = write_oumi_config(loaded, ctx.obj.state_dir, output, gpus=gpus, max_steps=max_steps)
    if as_json:
        render.print_json({k: str(v) for k, v in vars(files).items()})
        return
    render.console.print(
        f"wrote {files.training}, {files.job} and {files.env}\nthen:\n"
        f"  . {files.env}\n"
        f"  oumi launch up -c {files.job} --cluster {files.cluster}\n"
        "  oumi launch status --cloud ai-how"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(oumi_app, name="oumi")
