"""``ai-how hpc|cloud start|stop|status|destroy CONFIG``: the clusters' VMs on libvirt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from ai_how.cli import render
from ai_how.cli.common import JsonOpt, load_valid_config
from ai_how.config.topology import ClusterSide
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.provision import gpu_owners
from ai_how.provision.journal import Journal
from ai_how.provision.libvirt_conn import connect, default_uri, is_test_uri
from ai_how.provision.libvirt_xml import VirtType
from ai_how.provision.lifecycle import ClusterLifecycle, PreflightFailed, VMStatus
from ai_how.provision.spec import cluster_definition, recorded_definition

ConfigArg = Annotated[Path, typer.Argument(help="Path of the cluster config.", show_default=False)]
UriOpt = Annotated[
    str | None,
    typer.Option(
        "--uri",
        help="libvirt URI (default: the one recorded at start, else $AI_HOW_LIBVIRT_URI, "
        "$LIBVIRT_DEFAULT_URI or qemu:///system).",
        show_default=False,
    ),
]
VirtTypeName = Literal["auto", "kvm", "qemu"]


@contextlib.contextmanager
def _lifecycle(
    ctx: typer.Context,
    config: Path,
    side: ClusterSide,
    uri: str | None,
    pool_dir: Path | None = None,
    *,
    quiet: bool = False,
    from_journal: bool = False,
) -> Iterator[ClusterLifecycle]:
    """The lifecycle of one side; ``from_journal`` (destroy) also works once the config no longer has
    that side: the journal and what start recorded are enough to remove everything."""
    loaded = load_valid_config(ctx, config)
    layout = Layout(ctx.obj.state_dir)
    recorded = Journal(ctx.obj.store, side).info()
    uri = uri or recorded.get("uri") or default_uri()
    if pool_dir is None and recorded.get("pool_dir"):
        pool_dir = Path(recorded["pool_dir"])
    if from_journal and getattr(loaded.config.clusters, side) is None:
        cluster = recorded_definition(side, recorded, layout)
    else:
        cluster = cluster_definition(loaded, side, layout, uri=uri, pool_dir=pool_dir)
    with connect(uri) as conn:
        yield ClusterLifecycle(cluster, conn, ctx.obj.store, uri=uri, progress=render.progress_lines(quiet))


def _virt_type(virt_type: VirtTypeName, uri: str) -> VirtType:
    if is_test_uri(uri):
        return "test"
    if virt_type == "auto":
        return "kvm" if Path("/dev/kvm").exists() else "qemu"
    return virt_type


def _show(side: ClusterSide, rows: list[VMStatus], as_json: bool, extra: dict[str, Any]) -> None:
    if as_json:
        render.print_json({"cluster": side, **extra, "vms": [asdict(r) for r in rows]})
        return
    table = Table(title=f"{side} cluster {extra.get('name', '')}", title_justify="left")
    for column in ("VM", "role", "state", "IP", "vCPU", "RAM GB", "disk GB", "GPUs"):
        table.add_column(column, justify="right" if column in ("vCPU", "RAM GB", "disk GB") else "left")
    colour = {"running": "green", "shut off": "yellow", "not created": "dim"}
    for r in rows:
        state = f"[{colour.get(r.state, 'red')}]{r.state}[/]"
        table.add_row(
            escape(r.name),
            r.role,
            state,
            r.ip_address,
            str(r.cpu_cores),
            f"{r.memory_gb:g}",
            str(r.disk_gb),
            escape(", ".join(r.gpus)) or "-",
        )
    render.console.print(table)


def _owners_json(ctx: typer.Context) -> list[dict[str, str]]:
    return [asdict(o) for o in gpu_owners.owners(ctx.obj.store)]


def make_app(side: ClusterSide) -> typer.Typer:
    what = "HPC (SLURM) cluster" if side == "hpc" else "cloud (Kubernetes) cluster"
    app = typer.Typer(
        help=f"The {what}'s VMs on libvirt: start, stop, status, destroy.", no_args_is_help=True
    )

    @app.command("start")
    def start(
        ctx: typer.Context,
        config: ConfigArg,
        uri: UriOpt = None,
        virt_type: Annotated[
            str,
            typer.Option(
                "--virt-type",
                help="kvm (hardware virtualisation, host-passthrough CPU), qemu (TCG emulation, slow) or auto.",
            ),
        ] = "auto",
        pool_dir: Annotated[
            Path | None,
            typer.Option(
                "--pool-dir",
                help="Folder for the VMs' disks (default: /var/lib/libvirt/images/aihow-<cluster> "
                "with qemu:///system, else under the state dir).",
            ),
        ] = None,
        wait: Annotated[
            bool, typer.Option("--wait/--no-wait", help="Wait until every VM answers SSH (cloud-init done).")
        ] = True,
        configure: Annotated[
            bool,
            typer.Option(
                "--configure/--no-configure",
                help="hpc: run the SLURM playbook on the VMs once they answer SSH.",
            ),
        ] = True,
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the VMs.")] = 900,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the network/pool/volume/domain XML; create nothing.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Create (idempotently) and boot the cluster's VMs: NAT network with static leases, storage pool,
        qcow2 overlays on the base image, a cloud-init seed per VM, domains with their GPUs; then wait for
        SSH. A failure midway removes everything this start created."""
        if virt_type not in ("auto", "kvm", "qemu"):
            raise typer.BadParameter("use kvm, qemu or auto", param_hint="--virt-type")
        with _lifecycle(ctx, config, side, uri, pool_dir, quiet=as_json) as life:
            kind = _virt_type(virt_type, life.uri)  # type: ignore[arg-type]
            if dry_run:
                render.console.print(life.dry_run(virt_type=kind), markup=False, highlight=False)
                return
            try:
                with render.progress(as_json, f"starting the {side} cluster"):
                    rows = life.start(virt_type=kind, wait=wait, timeout_s=timeout)
            except PreflightFailed as exc:
                render.findings([f for f in exc.findings if f.severity != "info"], source=str(config))
                failed = len([f for f in exc.findings if f.severity == "error"])
                raise AiHowError(
                    f"cannot start the {side} cluster: {failed} host check(s) failed; nothing was created",
                    fix="fix what is listed above, then run start again",
                ) from None
            if side == "hpc" and configure:
                _configure_hpc(ctx, config, life, wait=wait, quiet=as_json)
            _show(side, rows, as_json, {"name": life.cluster.name, "uri": life.uri})

    @app.command("stop")
    def stop(
        ctx: typer.Context,
        config: ConfigArg,
        uri: UriOpt = None,
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait for a clean shutdown before forcing off.")
        ] = 120,
        as_json: JsonOpt = False,
    ) -> None:
        """Shut the VMs down gracefully (ACPI); force off any still running after --timeout. Disks stay."""
        with _lifecycle(ctx, config, side, uri, quiet=as_json) as life:
            stopped = life.stop(timeout_s=timeout)
            if as_json:
                render.print_json({"cluster": side, "stopped": stopped})
            else:
                render.console.print(f"stopped: {', '.join(stopped)}" if stopped else "no VM was running")

    @app.command("status")
    def status(ctx: typer.Context, config: ConfigArg, uri: UriOpt = None, as_json: JsonOpt = False) -> None:
        """Each VM's state, IP, resources and GPUs. Exit 1 unless every VM is running."""
        with _lifecycle(ctx, config, side, uri, quiet=True) as life:
            rows = life.status()
            extra: dict[str, Any] = {
                "name": life.cluster.name,
                "uri": life.uri,
                "gpu_owners": _owners_json(ctx),
            }
            health: Any = None
            if side == "cloud" and all(r.state == "running" for r in rows):
                health = _kubernetes_health(ctx, config)
                extra["kubernetes"] = health if isinstance(health, dict) else health and health.to_json()
            _show(side, rows, as_json, extra)
        if isinstance(health, dict) and not as_json:
            render.error_line(f"Kubernetes: {health['error']}", health["fix"])
        elif health is not None and not as_json:
            _show_health(health, False)
        kube_ok = health is None or (not isinstance(health, dict) and health.healthy)
        if not all(r.state == "running" for r in rows) or not kube_ok:
            raise typer.Exit(1)

    @app.command("destroy")
    def destroy(
        ctx: typer.Context,
        config: ConfigArg,
        uri: UriOpt = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Remove the domains, disks, seeds, pool and network that ai-how created for this cluster, and
        nothing else. The base image and the SSH key stay."""
        entries = Journal(ctx.obj.store, side).entries()
        if not entries:
            message = f"nothing to destroy: ai-how created nothing for the {side} cluster"
            render.print_json({"cluster": side, "removed": []}) if as_json else render.console.print(message)
            return
        if not yes:
            listing = ", ".join(e.describe() for e in entries)
            if not typer.confirm(f"Destroy the {side} cluster ({listing})?", err=True):
                raise typer.Exit(1)
        with _lifecycle(ctx, config, side, uri, quiet=as_json, from_journal=True) as life:
            removed = life.destroy()
            if as_json:
                render.print_json({"cluster": side, "removed": [asdict(r) for r in removed]})
            else:
                render.console.print(f"destroyed the {side} cluster: removed {len(removed)} objects")

    if side == "cloud":
        _add_kubernetes_commands(app)
    return app


def _add_kubernetes_commands(app: typer.Typer) -> None:
    from ai_how.cli.cloud_stack_cmds import make_stack_app

    app.add_typer(make_stack_app(), name="stack")

    @app.command("deploy")
    def deploy(
        ctx: typer.Context,
        config: ConfigArg,
        uri: UriOpt = None,
        tags: Annotated[
            list[str] | None, typer.Option("--tags", help="Kubespray tags to run (experts; repeatable).")
        ] = None,
        limit: Annotated[str | None, typer.Option("--limit", help="Kubespray --limit (experts).")] = None,
        driver_in_image: Annotated[
            bool,
            typer.Option(
                "--driver-in-image/--install-driver",
                help="Whether the VMs' image already has NVIDIA's driver (else the GPU Operator installs it).",
            ),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Build Kubernetes on the running cloud VMs with Kubespray (pinned release, its own venv), fetch
        the admin kubeconfig, wait for every node Ready, apply labels/taints, install the ingress
        controller and the GPU Operator, and show the cluster's health. Safe to re-run."""
        from ai_how.kube.deploy import deploy as run_deploy

        with _lifecycle(ctx, config, "cloud", uri, quiet=as_json) as life:
            down = [r.name for r in life.status() if r.state != "running"]
            if down:
                raise AiHowError(
                    f"the cloud VMs are not all running ({', '.join(down)})",
                    fix=f"start them first: `ai-how cloud start {config}`",
                )
            loaded = load_valid_config(ctx, config)
            health = run_deploy(
                loaded,
                life.cluster,
                Layout(ctx.obj.state_dir),
                tags=tags,
                limit=limit,
                driver_in_image=driver_in_image,
                progress=render.progress_lines(as_json),
            )
        _show_health(health, as_json)
        if not health.healthy:
            raise typer.Exit(1)

    @app.command("kubeconfig")
    def kubeconfig(
        ctx: typer.Context,
        config: ConfigArg,
        merge: Annotated[
            bool, typer.Option("--merge", help="Merge it into ~/.kube/config (a backup is kept) instead.")
        ] = False,
    ) -> None:
        """Print the path of the cloud cluster's admin kubeconfig (`export KUBECONFIG=$(ai-how cloud
        kubeconfig CONFIG)`), or merge it into ~/.kube/config."""
        from ai_how.kube.deploy import kubeconfig_path
        from ai_how.kube.kubeconfig import merge_into

        loaded = load_valid_config(ctx, config)
        path = kubeconfig_path(loaded.config, Layout(ctx.obj.state_dir))
        if not path.is_file():
            raise AiHowError(f"{path} does not exist", fix=f"run `ai-how cloud deploy {config}` first")
        if merge:
            target = merge_into(path, Path("~/.kube/config").expanduser())
            render.console.print(f"merged into {target}")
        else:
            typer.echo(str(path))


def _kubernetes_health(ctx: typer.Context, config: Path) -> Any:
    """The cluster's health when ai-how has its kubeconfig (after `cloud deploy`): a ClusterHealth,
    None before deploy, or {"error", "fix"} when the API server cannot be asked."""
    from ai_how.kube.deploy import kubeconfig_path
    from ai_how.kube.health import cluster_health

    path = kubeconfig_path(load_valid_config(ctx, config).config, Layout(ctx.obj.state_dir))
    if not path.is_file():
        return None  # Kubernetes not deployed yet: the VMs are all there is to show
    try:
        return cluster_health(path)
    except AiHowError as exc:
        return {"error": exc.message, "fix": exc.fix}


def _show_health(health: Any, as_json: bool) -> None:
    if as_json:
        render.print_json(health.to_json())
        return
    table = Table(title=f"Kubernetes {health.server_version} at {health.server}", title_justify="left")
    for column in ("node", "ready", "roles", "kubelet", "GPUs"):
        table.add_column(column)
    for node in health.nodes:
        ready = (
            "[green]Ready[/green]" if node.ready else f"[red]NotReady[/red] {escape(node.ready_reason or '')}"
        )
        table.add_row(
            escape(node.name),
            ready,
            ",".join(node.roles) or "-",
            node.kubelet_version,
            f"{node.gpus_allocatable}/{node.gpus_capacity}",
        )
    render.console.print(table)
    for problem in health.problems():
        render.console.print(f"[red]✗[/red] {escape(problem)}")
    if health.healthy:
        render.console.print("[green]cluster healthy[/green]")


def _configure_hpc(
    ctx: typer.Context, config: Path, life: ClusterLifecycle, *, wait: bool, quiet: bool
) -> None:
    """Run the SLURM playbook on the booted HPC VMs (needs them reachable over SSH)."""
    say = render.progress_lines(quiet)
    if is_test_uri(life.uri) or not wait:
        say("not configuring SLURM: " + ("the test driver has no guests" if wait else "--no-wait was given"))
        return
    from ai_how.provision.hpc_config.configure import configure_slurm

    configure_slurm(load_valid_config(ctx, config).config, life.cluster, progress=say)


def register(app: typer.Typer) -> None:
    app.add_typer(make_app("hpc"), name="hpc")
    app.add_typer(make_app("cloud"), name="cloud")
