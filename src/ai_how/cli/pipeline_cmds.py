"""``ai-how pipeline run|status|verify|rollback``: the main job, train → register → sync → deploy → verify → promote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from ai_how.cli import render
from ai_how.cli.common import ConfigOpt, JsonOpt, load_valid_config
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.pipeline import inputs, operations
from ai_how.pipeline.runner import PipelineRun, RunOptions, Stage, StageFailedError
from ai_how.pipeline.stages import STAGES

pipeline_app = typer.Typer(
    help="The main job: train → register → sync → deploy → verify → promote.", no_args_is_help=True
)

ModelNameOpt = Annotated[
    str | None, typer.Option("--model-name", help="Registered model name (default: the workload).")
]


def stage_detail(name: str, outputs: dict[str, Any]) -> str:
    """One line that says what a stage produced."""
    if not outputs:
        return ""
    if name == "train":
        metrics = outputs.get("metrics", {})
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if k in ("accuracy", "loss") and v is not None
        )
        return f"job {outputs.get('job_id')}; {shown}; MLflow run {outputs.get('mlflow_run_id', '')[:8]}"
    if name == "register":
        return f"{outputs.get('model_name')} v{outputs.get('version')} @candidate"
    if name == "promote":
        return f"{outputs.get('model_name')} v{outputs.get('version')} @production (was {outputs.get('previous_production')})"
    if name == "sync":
        return f"{len(outputs.get('uploaded', []))} uploaded, {len(outputs.get('skipped', []))} unchanged → {outputs.get('uri')}"
    if name == "deploy":
        return (
            f"{outputs.get('backend')} candidate at {outputs.get('endpoint')} "
            f"(ready in {outputs.get('ready_seconds')} s); production unchanged"
        )
    if name == "verify":
        checks = outputs.get("checks", [])
        return f"{sum(c['ok'] for c in checks)}/{len(checks)} checks passed"
    return ""


class ConsoleObserver:
    """Prints a status line per stage; a spinner shows the latest log line of the running stage."""

    def __init__(self, console: Console, verbose: bool) -> None:
        self.console, self.verbose = console, verbose
        self.status: Status | None = None

    def stage_started(self, stage: Stage) -> None:
        if self.console.is_terminal and not self.verbose:
            self.status = self.console.status(f"{stage.name}: {stage.description}")
            self.status.start()
        else:
            self.console.print(f"[bold]▶ {stage.name}[/bold] [dim]{escape(stage.description)}[/dim]")

    def log_line(self, stage: Stage, line: str) -> None:
        if self.status is not None:
            self.status.update(f"{stage.name}: {escape(line[:120])}")
        elif self.verbose:
            self.console.print(f"  [dim]{escape(line)}[/dim]")

    def stage_finished(self, stage: Stage, record: dict[str, Any]) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        state = record.get("status")
        seconds = f"{record.get('duration_s') or 0:7.2f} s"
        if state == "skipped":
            self.console.print(
                f"[cyan]↷ {stage.name:<9}[/cyan] skipped: inputs unchanged since the finished run"
            )
        elif state == "succeeded":
            detail = stage_detail(stage.name, record.get("outputs", {}))
            self.console.print(f"[green]✓ {stage.name:<9}[/green]{seconds}  {escape(detail)}")
        else:
            self.console.print(
                f"[red]✗ {stage.name:<9}[/red]{seconds}  {escape(str(record.get('error', '')))}"
            )


def report_table(doc: dict[str, Any]) -> Table:
    table = Table(title=f"run {doc['run_id']}: {doc.get('status')}", title_justify="left")
    for column, justify in (("stage", "left"), ("status", "left"), ("seconds", "right"), ("detail", "left")):
        table.add_column(column, justify="right" if justify == "right" else "left")
    total = 0.0
    for stage in STAGES:
        record = doc["stages"].get(stage.name, {})
        status = "skipped" if record.get("skipped") else record.get("status", "pending")
        style = {"succeeded": "green", "skipped": "cyan", "failed": "red"}.get(status, "yellow")
        seconds = record.get("duration_s")
        total += 0 if record.get("skipped") or seconds is None else seconds
        detail = (
            record.get("error") if status == "failed" else stage_detail(stage.name, record.get("outputs", {}))
        )
        table.add_row(
            stage.name,
            f"[{style}]{status}[/{style}]",
            f"{seconds:.2f}" if seconds is not None else "-",
            escape(str(detail or "")),
        )
    table.add_section()
    table.add_row("total", "", f"{total:.2f}", "")
    return table


def _new_run_options(
    workload: str, model_name: str | None, model: str | None, settings: list[str], resources: dict[str, int]
) -> RunOptions:
    """A new run's options, every one checked (workload, model name, ``--set``) before anything starts."""
    inputs.check_workload(workload)
    name = inputs.check_model_name(model_name or workload)
    return RunOptions(workload, name, inputs.workload_argv(workload, settings, model), resources)


@pipeline_app.command("run")
def run(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Cluster config (default for --resume: the run's).")
    ] = None,
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="digits-cnn | llm-sft")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Base model of llm-sft: tiny-llama | smollm2-135m | smollm-135m-shape."),
    ] = None,
    model_name: ModelNameOpt = None,
    gpus: Annotated[
        int | None,
        typer.Option("--gpus", min=0, help="GPUs per node for the training job (SLURM GRES). [default: 0]"),
    ] = None,
    procs: Annotated[
        int | None,
        typer.Option(
            "--procs-per-node", min=1, help="Data-parallel processes per node when --gpus is 0. [default: 1]"
        ),
    ] = None,
    nodes: Annotated[
        int | None, typer.Option("--nodes", min=1, help="Nodes for the training job (SLURM). [default: 1]")
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Workload option KEY=VALUE (e.g. epochs=3); repeatable.")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Resume RUN ('latest' for the newest): skip finished stages whose inputs are unchanged.",
        ),
    ] = None,
    stop_after: Annotated[
        str | None, typer.Option("--stop-after", help="Stop after this stage (resume later with --resume).")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print every log line of every stage.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline: train → register → sync → deploy → verify → promote, with a status line per stage.

    Each stage logs to <state>/runs/<run>/logs/<stage>.log; the final report is printed
    and written to <state>/runs/<run>/report.json. A failed run is resumed with --resume RUN.
    """
    store = ctx.obj.store
    if stop_after is not None:
        inputs.check_stage(stop_after, [s.name for s in STAGES])
    if resume is None:
        if config is None or workload is None:
            raise AiHowError(
                "pass --config and --workload (or --resume RUN)",
                fix="e.g. ai-how pipeline run -c config/local.yaml --workload digits-cnn",
            )
        resources = {"gpus": gpus or 0, "processes": procs or 1, "nodes": nodes or 1}
        options = _new_run_options(workload, model_name, model, settings or [], resources)
    else:
        resume = operations.resolve_run(store, resume)
        doc = PipelineRun.load(store, Layout(store.root), resume).read()
        if model_name is not None:
            inputs.check_model_name(model_name)
        inputs.check_resume(
            doc,
            inputs.ResumeRequest(
                workload,
                model_name,
                model,
                settings or [],
                {"gpus": gpus, "processes": procs, "nodes": nodes},
            ),
        )
        options = RunOptions("", "")
        if config is None:
            config = operations.config_path_of(doc)
    loaded = load_valid_config(ctx, config)
    console = render.err_console if as_json else render.console
    observer = ConsoleObserver(console, verbose)
    failure: StageFailedError | None = None
    try:
        _, doc = operations.run_pipeline(
            loaded, store, options, observer, resume, stop_after, debug=ctx.obj.debug
        )
    except StageFailedError as exc:
        failure = exc
        doc = store.read(f"runs/{exc.run_id}")
    if as_json:
        render.print_json(
            json.loads((ctx.obj.state_dir / "runs" / doc["run_id"] / "report.json").read_text())
        )
    else:
        console.print(report_table(doc))
        console.print(f"report: {ctx.obj.state_dir / 'runs' / doc['run_id'] / 'report.json'}")
        if doc.get("status") == "stopped":
            console.print(
                f"stopped after {doc.get('stopped_after')}; continue with: "
                f"ai-how pipeline run --resume {doc['run_id']}"
            )
    if failure is not None:
        render.error_line(failure.message, failure.fix)
        render.err_console.print(f"  resume with: ai-how pipeline run --resume {doc['run_id']}")
        raise typer.Exit(1)


@pipeline_app.command("status")
def status(
    ctx: typer.Context,
    run_id: Annotated[
        str | None, typer.Argument(help="A run id or 'latest'; omitted: list the runs.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run's stages (status, timing, outputs), or list all runs."""
    store = ctx.obj.store
    if run_id is None:
        runs = [operations.run_summary(store.read(n)) for n in store.names("runs")]
        runs.sort(key=lambda r: r.get("created") or "")
        if as_json:
            render.print_json(runs)
            return
        table = Table()
        for column in ("run", "workload", "model", "status", "created", "failed stage"):
            table.add_column(column)
        for r in runs:
            table.add_row(
                r["run_id"],
                r["workload"],
                r["model_name"],
                r["status"],
                r["created"],
                r.get("failed_stage") or "",
            )
        render.console.print(
            table if runs else "No pipeline runs yet: `ai-how pipeline run -c CONFIG --workload W`."
        )
        return
    doc = PipelineRun.load(store, Layout(store.root), operations.resolve_run(store, run_id)).read()
    if as_json:
        render.print_json(doc)
    else:
        render.console.print(report_table(doc))


@pipeline_app.command("verify")
def verify(
    ctx: typer.Context,
    config: ConfigOpt,
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model to check.")],
    as_json: JsonOpt = False,
) -> None:
    """Check the @production version end to end: registry, object store sha256, protocols, metrics. Exit 1 on failure."""
    inputs.check_model_name(model_name)
    loaded = load_valid_config(ctx, config)
    with render.progress(as_json, "verifying"):
        model, checks = operations.verify_production(loaded, ctx.obj.store, model_name)
    ok = all(c.ok for c in checks)
    if as_json:
        render.print_json(
            {"model": model_name, "version": model.version, "ok": ok, "checks": [c.to_json() for c in checks]}
        )
    else:
        for c in checks:
            mark = "[green]✓[/green]" if c.ok else "[red]✗[/red]"
            render.console.print(f"{mark} {escape(c.name)}: {escape(c.detail)}")
        render.console.print(f"{model_name} v{model.version}: {'all checks passed' if ok else 'FAILED'}")
    if not ok:
        raise typer.Exit(1)


@pipeline_app.command("rollback")
def rollback(
    ctx: typer.Context,
    config: ConfigOpt,
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model to roll back.")],
    to: Annotated[
        int | None, typer.Option("--to", help="Version to roll back to (default: the previous @production).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move @production back to the previous version and redeploy it (the alias moves only once it serves)."""
    inputs.check_model_name(model_name)
    loaded = load_valid_config(ctx, config)
    with render.progress(as_json, "rolling back"):
        result = operations.rollback(loaded, ctx.obj.store, model_name, to)
    if as_json:
        render.print_json(result)
    else:
        render.console.print(
            f"{model_name}: @production v{result['from']} → v{result['to']}, serving at "
            f"{result['endpoint']} (ready in {result['ready_seconds']} s)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
