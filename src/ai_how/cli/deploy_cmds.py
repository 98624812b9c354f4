"""``ai-how deploy MODEL[@ALIAS|/VERSION]``: serve an MLflow registry version outside a pipeline run."""

from __future__ import annotations

from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config


def deploy(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            metavar="MODEL[@ALIAS|/VERSION]",
            help="A registry version: digits-cnn@production, my-llm/3, or a name alone for its latest version.",
        ),
    ],
    config: ConfigOpt,
    canary: Annotated[
        int | None,
        typer.Option(
            "--canary",
            min=1,
            max=100,
            help="KServe Knative mode: send PERCENT of production's traffic to this version (100 completes it).",
            metavar="PERCENT",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync a registry version to the object store (sha256 manifest) and serve it in production.

    Versions ai-how registered are already in the object store; any other MLflow Model it can serve (a
    transformers LLM, ai-how's classifier) is downloaded from MLflow and synced first. The version runs
    as a candidate beside production and replaces it only once its protocol checks pass, on the backend
    the config names (mlops.serving.backend: local or kserve). Registry aliases are not changed.
    """
    from ai_how.pipeline.registry_deploy import deploy_version

    loaded = load_valid_config(ctx, config)

    say = render.progress_lines(as_json)
    with render.stdout_to_stderr(as_json), render.progress(as_json, f"deploying {ref}"):
        result = deploy_version(loaded, ctx.obj.store, ref, progress=say, canary_percent=canary)
    if as_json:
        render.print_json(result)
        return
    checked = f"; {len(result['checks'])} checks passed" if result["checks"] else ""
    render.console.print(
        f"{result['model']} v{result['version']} ({result['kind']}) serves as {result['role']} at "
        f"{result['endpoint']} on {result['backend']}{checked}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
