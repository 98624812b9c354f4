"""``ai-how image build|packer``: the VMs' base images (Debian qcow2 with cloud-init) and their Packer templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import JsonOpt
from ai_how.provision.images.recipes import DEFAULT_MIRROR, DEFAULT_SIZE_GIB, ROLES, recipe_for

image_app = typer.Typer(
    help="Base images of the workstation VMs. `build` makes ROLE's qcow2 here with mmdebstrap (root, "
    "the Debian archive); `packer` writes the equivalent Packer template for a KVM host. "
    f"Roles: {', '.join(ROLES)}.",
    no_args_is_help=True,
)

RoleArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(ROLES)}.", show_default=False)]
MirrorOpt = Annotated[
    str, typer.Option("--mirror", help="Debian archive to install from, e.g. a local apt cache.")
]
SizeOpt = Annotated[int, typer.Option("--size", help="Raw disk size in GiB (each VM's overlay grows it).")]


def _stderr(line: str) -> None:
    render.err_console.print(line, markup=False)


@image_app.command("build")
def build(
    role: RoleArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Images go to OUTPUT/ROLE/ROLE-HASH.qcow2 (+ .json, .log).")
    ] = Path("build/images"),
    mirror: MirrorOpt = DEFAULT_MIRROR,
    size: SizeOpt = DEFAULT_SIZE_GIB,
    force: Annotated[
        bool, typer.Option("--force", help="Build even when the recipe's image exists.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build ROLE's qcow2 with mmdebstrap (needs root and the Debian archive); print its path.

    An unchanged recipe is not built again (--force rebuilds). OUTPUT/ROLE/ROLE.qcow2 points at the current one.
    """
    from ai_how.provision.images.build import build_image

    recipe = recipe_for(role, mirror=mirror, size_gib=size)
    built = build_image(recipe, output, force=force, report=_stderr)
    if as_json:
        render.print_json(built.as_dict())
        return
    if built.up_to_date:
        _stderr(f"{role} is up to date (recipe {recipe.short_hash}; --force rebuilds)")
    else:
        _stderr(
            f"built {role} in {built.build_seconds:.0f} s: {built.size_bytes / 1e6:.0f} MB, log {built.log}"
        )
    typer.echo(str(built.path))


@image_app.command("packer")
def packer(
    role: RoleArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Writes OUTPUT/ROLE.pkr.hcl and OUTPUT/ROLE/{user,meta}-data."),
    ] = Path("packer"),
    mirror: MirrorOpt = DEFAULT_MIRROR,
    size: SizeOpt = DEFAULT_SIZE_GIB,
    ssh_key: Annotated[
        Path,
        typer.Option("--ssh-key", help="Private key Packer logs in with; its .pub goes into the user-data."),
    ] = Path("~/.ssh/id_ed25519"),
    as_json: JsonOpt = False,
) -> None:
    """Write ROLE's Packer template and cloud-init user-data (same packages, for a KVM host).

    HCL2, qemu builder on Debian's genericcloud image; build it with `packer build OUTPUT/ROLE.pkr.hcl`.
    """
    from ai_how.provision.images.packer import write_packer

    files = write_packer(recipe_for(role, mirror=mirror, size_gib=size), output, ssh_key=ssh_key)
    if as_json:
        render.print_json({k: str(v) for k, v in vars(files).items()})
        return
    _stderr(f"wrote {files.user_data} and {files.meta_data}")
    typer.echo(str(files.template))


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
