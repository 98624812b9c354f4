"""``ai-how cloud stack render|up|down|status CONFIG``: the MLOps stack on the cloud cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ai_how.cli import render
from ai_how.cli.common import JsonOpt, load_valid_config
from ai_how.layout import Layout

ConfigArg = Annotated[Path, typer.Argument(help="Path of the cluster config.", show_default=False)]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Kubeconfig of the cluster (default: clusters.cloud.kubeconfig, else the one `cloud deploy` fetched).",
        show_default=False,
    ),
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.", show_default=False)]


def _kubeconfig(ctx: typer.Context, config: Path, given: Path | None) -> tuple[Any, Path]:
    from ai_how.kube.deploy import kubeconfig_path

    loaded = load_valid_config(ctx, config)
    return loaded, given or kubeconfig_path(loaded.config, Layout(ctx.obj.state_dir))


def _show(rows: list[Any], as_json: bool, title: str) -> None:
    if as_json:
        render.print_json({"ready": all(r.ready for r in rows), "components": [r.to_json() for r in rows]})
        return
    table = Table(title=title, title_justify="left")
    for column in ("component", "state", "endpoint"):
        table.add_column(column)
    for row in rows:
        state = "[green]ready[/green]" if row.ready else f"[red]not ready[/red] {escape(row.detail)}"
        table.add_row(row.component, state, escape(row.endpoint) or "-")
    render.console.print(table)


def make_stack_app() -> typer.Typer:
    app = typer.Typer(
        help="The MLOps stack on the cloud cluster: object store, PostgreSQL, MLflow, KServe.",
        no_args_is_help=True,
    )

    @app.command("render")
    def render_cmd(
        ctx: typer.Context,
        config: ConfigArg,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder to write the manifests and values to.")
        ],
        as_json: JsonOpt = False,
    ) -> None:
        """Write the stack as plain YAML (one file per component, in apply order), pinned charts with
        their values, a kustomization and a README with the order. Secrets are never written: manifests
        name them. Every object is validated strictly for the config's Kubernetes version."""
        from ai_how.kube.stack.render import InvalidRender, write_render

        loaded = load_valid_config(ctx, config)
        try:
            written = write_render(loaded.config, out)
        except InvalidRender as exc:
            for problem in exc.problems:
                render.error_line(problem)
            raise
        if as_json:
            render.print_json({"out": str(out), "files": [str(p.relative_to(out)) for p in written]})
        else:
            render.console.print(
                f"wrote {len(written)} files to {escape(str(out))} (apply order in README.txt)"
            )

    @app.command("up")
    def up_cmd(
        ctx: typer.Context,
        config: ConfigArg,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait for each component.")
        ] = 600,
        as_json: JsonOpt = False,
    ) -> None:
        """Apply the stack in dependency order (server-side apply, field manager ai-how; helm on the control
        plane for the charts), creating its Secrets from the environment variables the config names, and
        wait for each component. Ends with the endpoints. Safe to re-run."""
        from ai_how.kube.stack.apply import up
        from ai_how.kube.stack.ssh_helm import ssh_helm

        loaded, path = _kubeconfig(ctx, config, kubeconfig)
        say = render.progress_lines(as_json)
        helm = ssh_helm(loaded, Layout(ctx.obj.state_dir), say)
        rows = up(loaded.config, path, helm, progress=say, context=context, timeout_s=timeout)
        _show(rows, as_json, "MLOps stack")
        if not all(r.ready for r in rows):
            raise typer.Exit(1)

    @app.command("down")
    def down_cmd(
        ctx: typer.Context,
        config: ConfigArg,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        crds: Annotated[
            bool, typer.Option("--crds", help="Also remove KServe's CRDs (and so every InferenceService).")
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Remove what `stack up` applied: objects labelled app.kubernetes.io/managed-by=ai-how, its helm
        releases, its Secrets, and the namespaces it created once nothing else is in them (their volumes
        go with them)."""
        from ai_how.kube.stack.apply import down
        from ai_how.kube.stack.ssh_helm import ssh_helm

        loaded, path = _kubeconfig(ctx, config, kubeconfig)
        if not yes and not typer.confirm(
            "Remove the MLOps stack (MLflow, PostgreSQL, the object store and their data)?", err=True
        ):
            raise typer.Exit(1)
        say = render.progress_lines(as_json)
        helm = ssh_helm(loaded, Layout(ctx.obj.state_dir), say)
        removed = down(loaded.config, path, helm, progress=say, remove_crds=crds, context=context)
        if as_json:
            render.print_json({"removed": removed})
        else:
            render.console.print(f"removed {len(removed)} objects and releases")

    @app.command("status")
    def status_cmd(
        ctx: typer.Context,
        config: ConfigArg,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Each component of the stack, ready or what is missing, and its endpoint. Exit 1 unless all ready."""
        from ai_how.kube.stack.apply import status

        loaded, path = _kubeconfig(ctx, config, kubeconfig)
        rows = status(loaded.config, path, context=context)
        _show(rows, as_json, "MLOps stack")
        if not all(r.ready for r in rows):
            raise typer.Exit(1)

    return app


__all__ = ["make_stack_app"]
