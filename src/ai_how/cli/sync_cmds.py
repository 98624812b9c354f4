"""``ai-how sync SRC DEST``: checksum-verified, resumable directory sync to any object store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import JsonOpt, load_valid_config
from ai_how.objectstore.base import ObjectStoreError, StoreURI, open_store
from ai_how.objectstore.sync import sync_directory


def sync(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Local directory (e.g. a model on the shared storage).")],
    dest: Annotated[str, typer.Argument(help="file:///dir/prefix or s3://bucket/prefix")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config with the S3 endpoint/credentials.")
    ] = None,
    delete: Annotated[
        bool,
        typer.Option(
            "--delete",
            help="Also remove objects under DEST that are not in SRC (each is printed first). "
            "Refused at a bucket or store root.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Files sent in parallel (default: 16 for s3://, 8 for file://).", min=1, max=64),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync SRC to DEST: sha256 manifest, only changed files sent, every upload verified.

    DEST is a directory: s3://bucket/models/m/v1 never touches s3://bucket/models/m/v10. Objects
    under DEST that SRC does not have are kept unless --delete is given. Progress is recorded
    under the state directory (sync/), so a re-run after an interruption sends only what was
    not yet verified.
    """
    uri = StoreURI.parse(dest).scoped()
    if delete and not uri.prefix:
        raise ObjectStoreError(
            f"--delete refused: {dest} is a bucket or store root, so every other object there would be removed",
            fix=f"name a prefix ({dest.rstrip('/')}/PREFIX) or leave out --delete",
        )
    store_config = load_valid_config(ctx, config).config.mlops.object_store if config else None
    store, prefix = open_store(uri, store_config)
    state = ctx.obj.state_dir / "sync" / (dest.replace("://", "_").replace("/", "_") + ".json")

    def show(path: str, outcome: str) -> None:
        if outcome == "delete" and not as_json:
            render.console.print(f"delete: {uri.join(path)!s}", markup=False)

    with render.progress(as_json, f"syncing {source} → {dest}"):
        report = sync_directory(
            source, store, prefix, state_path=state, workers=workers, delete=delete, on_file=show
        )
    if as_json:
        render.print_json({"source": str(source), "dest": dest, **report.to_json()})
        return
    kept = (
        "" if delete or not report.stale else f", {len(report.stale)} not in SRC kept (--delete removes them)"
    )
    render.console.print(
        f"synced {source} → {dest}: {len(report.uploaded)} uploaded, {len(report.skipped)} unchanged, "
        f"{len(report.deleted)} deleted{kept}, {report.bytes_uploaded} bytes in {report.duration_s:.2f} s, "
        "all verified",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)
