"""``ai-how image build|packer|server``: the VMs' base images (Debian qcow2 with cloud-init), their Packer
templates, and the model-server container image KServe's ServingRuntime runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ai_how.cli import render
from ai_how.cli.common import JsonOpt, load_valid_config
from ai_how.provision.images.recipes import DEFAULT_MIRROR, DEFAULT_SIZE_GIB, ROLES, recipe_for

image_app = typer.Typer(
    help="Base images of the workstation VMs. `build` makes ROLE's qcow2 here with mmdebstrap (root, "
    "the Debian archive); `packer` writes the equivalent Packer template for a KVM host. "
    f"Roles: {', '.join(ROLES)}. `server` builds the model-server container image with podman, buildah or docker.",
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


@image_app.command("server")
def server(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Cluster config: --tag defaults to its mlops.serving.image."),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            "-t",
            help="Image name:tag (default: the config's image, else ai-how/model-server:VERSION).",
        ),
    ] = None,
    variant: Annotated[
        str, typer.Option("--variant", help="cpu (CPU torch) or cuda (CUDA torch, NVIDIA base).")
    ] = "cpu",
    builder: Annotated[
        str,
        typer.Option("--builder", help="auto (first of podman, buildah, docker), podman, buildah or docker."),
    ] = "auto",
    push: Annotated[
        bool, typer.Option("--push", help="Push the image with the same tool after the build.")
    ] = False,
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base-image",
            help="FROM image (default: python:3.11-slim-bookworm for cpu, nvidia/cuda for cuda).",
        ),
    ] = None,
    torch_index_url: Annotated[
        str | None,
        typer.Option(
            "--torch-index-url", help="Extra pip index for torch ('' for none; default: the variant's)."
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Download every wheel with this host's pip first; build with no network (base image must be local).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the model-server image (the ai-how wheel with the serve extra, non-root, V2 health check); print its tag.

    The config's mlops.serving.image is the image KServe's ServingRuntime runs: build and push that tag.
    """
    from ai_how.containers.model_server import ServerImageRequest, build_server_image
    from ai_how.kube.kserve import default_image, runtime_image

    if tag is None:
        tag = (
            runtime_image(load_valid_config(ctx, config).config.mlops.serving) if config else default_image()
        )
    request = ServerImageRequest(
        tag=tag,
        variant=variant,
        base_image=base_image,
        torch_index_url=torch_index_url,
        offline=offline,
        push=push,
        builder=builder,
    )
    built = build_server_image(request, log_dir=ctx.obj.state_dir / "images", report=_stderr)
    if as_json:
        render.print_json(built.as_dict())
        return
    pushed = ", pushed" if built.pushed else ""
    _stderr(f"built {built.tag} with {built.builder} in {built.build_seconds:.0f} s{pushed}; log {built.log}")
    typer.echo(built.tag)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
