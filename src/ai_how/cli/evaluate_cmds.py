"""``ai-how evaluate``: Oumi custom evaluation of a registered LLM version, logged to its MLflow run (MLOPS-3.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config


def evaluate(
    ctx: typer.Context,
    config: ConfigOpt,
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model to evaluate.")],
    version: Annotated[int | None, typer.Option(help="Version (default: @production).")] = None,
    remote: Annotated[
        bool, typer.Option("--remote", help="Generate through the deployed endpoint (Oumi REMOTE engine).")
    ] = False,
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="Held-out chat JSONL (default: the eval split the training run recorded; "
            "evaluate refuses to run when that file is gone)."
        ),
    ] = None,
    max_examples: Annotated[
        int, typer.Option(min=1, help="Held-out conversations scored for perplexity.")
    ] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Perplexity on a held-out split and answers to the seed's three prompts, offline, through Oumi."""
    from ai_how.deployers.base import deployer_for
    from ai_how.errors import AiHowError
    from ai_how.evaluation.run import run_evaluation
    from ai_how.layout import Layout
    from ai_how.pipeline.inputs import check_model_name

    check_model_name(model_name)  # before any path is built from it
    loaded = load_valid_config(ctx, config)
    endpoint = None
    if remote:
        endpoint = deployer_for(loaded.config, Layout(ctx.obj.state_dir)).endpoint(model_name)
        if endpoint is None:
            raise AiHowError(
                f"{model_name} is not deployed, so --remote has no endpoint",
                fix="deploy it (`ai-how pipeline run`) or drop --remote",
            )
    with render.progress(as_json, "evaluating with Oumi"), render.stdout_to_stderr(as_json):
        result = run_evaluation(
            loaded,
            ctx.obj.state_dir,
            model_name,
            version=version,
            endpoint=endpoint,
            dataset=dataset,
            max_examples=max_examples,
        )
    if as_json:
        render.print_json(
            {
                "model": result.model,
                "version": result.version,
                "engine": result.engine,
                "perplexity": result.perplexity,
                "generation": result.generation,
                "output_dir": str(result.output_dir),
                "mlflow_run_id": result.mlflow_run_id,
            }
        )
        return
    ppl = result.perplexity
    render.console.print(
        f"{result.model} v{result.version} ({result.engine}): perplexity {ppl['perplexity']:.2f} "
        f"over {ppl['tokens']} tokens of {ppl['examples']} held-out conversations"
    )
    for item in result.generation["generations"]:
        render.console.print(f"  [bold]{escape(item['prompt'])}[/bold] → {escape(item['answer'][:200])!r}")
    render.console.print(f"logged to MLflow run {result.mlflow_run_id}; files in {result.output_dir}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
