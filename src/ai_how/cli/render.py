"""Rich rendering of core results. Commands decide *what* to show; this module decides *how*."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ai_how.config.findings import Finding, Severity
from ai_how.config.plan import ResourcePlan
from ai_how.config.validate import ValidationReport

# Piped output (logs, CI, tests) gets a wide fixed width so tables are not cropped.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

_MARK = {
    Severity.ERROR: "[red]✗ error[/red]",
    Severity.WARNING: "[yellow]! warning[/yellow]",
    Severity.INFO: "[cyan]i note[/cyan]",
}


@contextlib.contextmanager
def progress(quiet: bool, message: str) -> Iterator[None]:
    """A spinner on stderr while long work runs (only on a terminal, never with --json)."""
    if quiet or not err_console.is_terminal:
        yield
        return
    with err_console.status(message):
        yield


def progress_lines(quiet: bool) -> Callable[[str], None]:
    """A progress callback printing dim lines on stderr (nothing with --json)."""

    def say(message: str) -> None:
        err_console.print(f"[dim]{escape(message)}[/dim]")

    return (lambda _message: None) if quiet else say


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """Route everything written to file descriptor 1 (libraries' banners and logs) to stderr, so that
    ``--json`` output on stdout stays parseable."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def error_line(message: str, fix: str | None = None) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    if fix:
        err_console.print(f"  [dim]fix:[/dim] {escape(fix)}")


def findings(items: list[Finding], *, source: str = "") -> None:
    for f in items:
        prefix = f"{escape(source)}: " if source else ""
        console.print(f"{_MARK[f.severity]} {prefix}[bold]{escape(f.where)}[/bold]: {escape(f.message)}")
        if f.fix:
            console.print(f"    [dim]fix:[/dim] {escape(f.fix)}")


def validation_summary(report: ValidationReport) -> None:
    cfg = report.loaded.config
    plan = report.plan
    status = "[green]valid[/green]" if report.valid else "[red]invalid[/red]"
    counts = f"{len(report.errors)} errors, {len(report.warnings)} warnings, {len(report.notes)} notes"
    console.print(f"{escape(str(report.loaded.path))}: {status} ({counts})")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    table.add_row("name", escape(cfg.metadata.name))
    for totals in plan.clusters:
        table.add_row(
            f"{totals.cluster} cluster",
            f"{escape(totals.name)}: {totals.vms} VMs, {totals.cpu_cores} cores, {totals.memory_gb} GB RAM, "
            f"{totals.disk_gb} GB disk, {totals.gpus} GPUs"
            + ("" if totals.auto_start else " (auto_start: false)"),
        )
    if cfg.clusters.hpc is not None:
        table.add_row("training", f"scheduler {cfg.clusters.hpc.scheduler}")
    host = plan.host
    table.add_row(
        "host", f"{host.cpu_cores} cores, {host.memory_gb} GB RAM, {host.disk_gb} GB disk ({host.source})"
    )
    peak = plan.peak
    if peak.clusters:
        table.add_row(
            "peak use",
            f"{peak.cpu_cores} cores, {peak.memory_gb} GB RAM, {peak.disk_gb} GB disk "
            f"({' + '.join(peak.clusters)})",
        )
    mlops = cfg.mlops
    tracking = (
        mlops.mlflow.tracking_uri
        or f"local server {mlops.mlflow.host}:{mlops.mlflow.port} ({mlops.mlflow.backend_store.type})"
    )
    table.add_row("tracking", escape(tracking))
    store = mlops.object_store
    table.add_row(
        "object store", escape(f"{store.backend}" + (f" {store.endpoint}" if store.endpoint else ""))
    )
    table.add_row(
        "serving",
        escape(
            f"{mlops.serving.backend} (replicas {mlops.serving.autoscaling.min_replicas}"
            f"-{mlops.serving.autoscaling.max_replicas})"
        ),
    )
    console.print(table)


def plan(plan: ResourcePlan) -> None:
    host = plan.host
    console.print(
        f"[bold]Resource plan for {escape(plan.name)}[/bold]  host: {host.cpu_cores} cores, "
        f"{host.memory_gb} GB RAM, {host.disk_gb} GB disk ({host.source})"
    )
    if not plan.vms:
        console.print("No VMs: everything runs on this machine (embedded mode).")
    for totals in plan.clusters:
        rows = [vm for vm in plan.vms if vm.cluster == totals.cluster]
        start = (
            ""
            if totals.auto_start
            else "  [yellow](auto_start: false: started only while the other side is stopped)[/yellow]"
        )
        table = Table(
            title=f"{totals.cluster.upper()} cluster: {escape(totals.name)}{start}", title_justify="left"
        )
        for column, justify in (
            ("VM", "left"),
            ("role", "left"),
            ("IP", "left"),
            ("cores", "right"),
            ("RAM GB", "right"),
            ("disk GB", "right"),
            ("GPUs", "left"),
        ):
            table.add_column(column, justify="right" if justify == "right" else "left")
        for vm in rows:
            gpus = ", ".join(
                g + (" [yellow](shared)[/yellow]" if g.split(" ")[0] in vm.shared_gpus else "")
                for g in vm.gpus
            )
            table.add_row(
                escape(vm.name),
                vm.role,
                vm.ip_address,
                str(vm.cpu_cores),
                str(vm.memory_gb),
                str(vm.disk_gb),
                gpus or "-",
            )
        table.add_section()
        table.add_row(
            "[bold]total[/bold]",
            "",
            "",
            str(totals.cpu_cores),
            str(totals.memory_gb),
            str(totals.disk_gb),
            str(totals.gpus),
        )
        console.print(table)
    if plan.scenarios:
        usage = Table(title="Host capacity", title_justify="left")
        for column in ("running together", "cores", "RAM GB", "disk GB"):
            usage.add_column(column, justify="left" if column == "running together" else "right")
        for u in plan.scenarios:
            usage.add_row(
                " + ".join(u.clusters),
                _fraction(u.cpu_cores, host.cpu_cores),
                _fraction(u.memory_gb, host.memory_gb),
                _fraction(u.disk_gb, host.disk_gb),
            )
        console.print(usage)
    for share in plan.gpu_shares:
        how = "time-shared" if share.time_shared else "[red]CONFLICT: both holders can run at once[/red]"
        label = f" ({escape(share.label)})" if share.label else ""
        console.print(f"GPU {share.pci_address}{label}: {how} between {', '.join(share.holders)}")


def _fraction(need: int, have: int) -> str:
    text = f"{need}/{have}"
    return f"[red]{text}[/red]" if need > have else text
