"""``ai-how sync SRC DEST``: checksum-verified, resumable directory sync to any object store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import JsonOpt, load_valid_config
from ai_how.objectstore.base import open_store
from ai_how.objectstore.sync import sync_directory


def sync(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Local directory (e.g. a model on the shared storage).")],
    dest: Annotated[str, typer.Argument(help="file:///dir/prefix or s3://bucket/prefix")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config with the S3 endpoint/credentials.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Files uploaded in parallel.", min=1, max=64)] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Sync SRC to DEST: sha256 manifest, only changed files sent, every upload read back and verified.

    Progress is recorded under the state directory (sync/), so a re-run after an
    interruption sends only what was not yet verified.
    """
    store_config = load_valid_config(ctx, config).config.mlops.object_store if config else None
    store, prefix = open_store(dest, store_config)
    state = ctx.obj.state_dir / "sync" / (dest.replace("://", "_").replace("/", "_") + ".json")
    with render.progress(as_json, f"syncing {source} → {dest}"):
        report = sync_directory(source, store, prefix, state_path=state, workers=workers)
    if as_json:
        render.print_json({"source": str(source), "dest": dest, **report.to_json()})
    else:
        render.console.print(
            f"synced {source} → {dest}: {len(report.uploaded)} uploaded, {len(report.skipped)} "
            f"unchanged, {report.bytes_uploaded} bytes in {report.duration_s:.2f} s, all verified"
        )


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)
