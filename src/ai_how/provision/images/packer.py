"""``ai-how image packer``: the Packer template equivalent to a recipe, for users who build on a KVM host.

Writes ``<out>/<role>.pkr.hcl`` (HCL2, the qemu builder booting Debian's genericcloud qcow2 with a
NoCloud seed, installing the recipe's packages with a shell provisioner) and ``<out>/<role>/user-data``
+ ``meta-data`` rendered through ``ai_how.provision.cloudinit``. The template holds no credentials:
Packer logs in with the user's own key pair (the public half goes into user-data, the private half
is a variable); the image is generalised before shutdown so that key does not stay in it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.provision import cloudinit
from ai_how.provision.images.hcl import Block, Expr, render
from ai_how.provision.images.recipes import IDENTITY_FILES, MACHINE_ID, Recipe

DEBIAN_CLOUD = "https://cloud.debian.org/images/cloud/bookworm/latest"
SOURCE_IMAGE = f"{DEBIAN_CLOUD}/debian-12-genericcloud-amd64.qcow2"
SOURCE_CHECKSUM = f"file:{DEBIAN_CLOUD}/SHA512SUMS"
DEFAULT_SSH_KEY = Path("~/.ssh/id_ed25519")
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


@dataclass(frozen=True)
class PackerFiles:
    template: Path
    user_data: Path
    meta_data: Path


def read_public_key(private_key: Path) -> str:
    """The public half (``KEY.pub``) of the key pair Packer logs in with; one line naming the fix if absent."""
    key = private_key.expanduser()
    if key.suffix == ".pub":
        raise AiHowError(
            f"--ssh-key {private_key} is a public key",
            fix=f"pass the private key: --ssh-key {key.with_suffix('')}",
        )
    public = key.with_name(key.name + ".pub")
    create = f"create a key pair: ssh-keygen -t ed25519 -N '' -f {key}"
    if not key.is_file():
        raise AiHowError(f"--ssh-key {key}: no such private key", fix=f"{create}, or pass --ssh-key PATH")
    try:
        text = public.read_text(encoding="utf-8").strip()
    except OSError:
        raise AiHowError(f"--ssh-key {key}: its public half {public} is missing", fix=create) from None
    if not text.startswith(_KEY_TYPES):
        raise AiHowError(f"{public} is not an OpenSSH public key", fix=create)
    return text


def _variables(private_key: Path) -> list[Block]:
    def variable(name: str, default: str, description: str) -> Block:
        return Block(
            "variable", (name,), {"type": Expr("string"), "default": default, "description": description}
        )

    return [
        variable("debian_image_url", SOURCE_IMAGE, "Debian's genericcloud qcow2 the image starts from."),
        variable(
            "debian_image_checksum",
            SOURCE_CHECKSUM,
            "Its checksum: the SHA512SUMS file beside it, or sha512:<hex> pinned (offline validation too).",
        ),
        variable(
            "ssh_private_key_file",
            str(private_key),
            "Private key Packer logs in with (unencrypted); its public half is in the role's user-data.",
        ),
    ]


def _provision_commands(recipe: Recipe) -> list[str]:
    """What the shell provisioner runs as root once the VM is up."""
    commands = ["cloud-init status --wait"]
    if recipe.gpu:  # genericcloud's sources name only main
        extra = " ".join(c for c in recipe.components if c != "main")
        line = f"deb {recipe.mirror} {recipe.suite} {extra}"
        commands.append(
            f"echo {shlex.quote(line)} > /etc/apt/sources.list.d/ai-how-{recipe.suite}-nonfree.list"
        )
    commands += [
        "apt-get update",
        "apt-get install -y --no-install-recommends " + " ".join(recipe.extra_packages),
        "apt-get clean",
    ]
    return commands


def _shutdown_command() -> str:
    """Generalise (identity files, machine-id, cloud-init's state, Packer's login key), then power off."""
    identity = " ".join("/" + pattern for pattern in IDENTITY_FILES)
    steps = [
        f"rm -f {identity}",
        f"truncate -s 0 /{MACHINE_ID}",
        "cloud-init clean --logs",
        f"rm -f /home/{cloudinit.ADMIN_USER}/.ssh/authorized_keys",
        "shutdown -P now",
    ]
    return f"sudo sh -c '{'; '.join(steps)}'"


def template_blocks(recipe: Recipe, private_key: Path) -> list[Block]:
    role = recipe.role
    source = Block(
        "source",
        ("qemu", role),
        {
            "iso_url": Expr("var.debian_image_url"),
            "iso_checksum": Expr("var.debian_image_checksum"),
            "disk_image": True,
            "disk_size": f"{recipe.size_gib * 1024}M",
            "format": "qcow2",
            "accelerator": "kvm",
            "headless": True,
            "cpus": 2,
            "memory": 2048,
            "net_device": "virtio-net",
            "disk_interface": "virtio",
            "cd_files": [
                Expr.template(f"${{path.root}}/{role}/user-data"),
                Expr.template(f"${{path.root}}/{role}/meta-data"),
            ],
            "cd_label": "cidata",
            "output_directory": Expr.template(f"${{path.root}}/../build/packer/{role}"),
            "vm_name": f"{role}.qcow2",
            "communicator": "ssh",
            "ssh_username": cloudinit.ADMIN_USER,
            "ssh_private_key_file": Expr("var.ssh_private_key_file"),
            "ssh_timeout": "20m",
            "shutdown_command": _shutdown_command(),
        },
    )
    provisioner = Block(
        "provisioner",
        ("shell",),
        {
            "environment_vars": ["DEBIAN_FRONTEND=noninteractive"],
            "execute_command": "chmod +x {{ .Path }}; sudo -E sh -c '{{ .Vars }} {{ .Path }}'",
            "inline": _provision_commands(recipe),
        },
    )
    build = Block("build", (), {"sources": [f"source.qemu.{role}"]}, [provisioner])
    return [*_variables(private_key), source, build]


def _header(recipe: Recipe) -> str:
    return (
        f"The {recipe.role} base image, built with Packer on a KVM host (written by `ai-how image packer "
        f"{recipe.role}`;\nre-run that instead of editing). Same packages as `ai-how image build {recipe.role}` "
        f"(recipe {recipe.short_hash}).\n"
        f"  packer build {recipe.role}.pkr.hcl   -> ../build/packer/{recipe.role}/{recipe.role}.qcow2\n"
        "Offline validation: packer validate -var debian_image_checksum=sha512:<hex> "
        f"{recipe.role}.pkr.hcl"
    )


def write_packer(recipe: Recipe, out_dir: Path, *, ssh_key: Path = DEFAULT_SSH_KEY) -> PackerFiles:
    """Write the role's template, user-data and meta-data under ``out_dir``."""
    private_key = ssh_key.expanduser().absolute()
    public_key = read_public_key(private_key)
    out = out_dir.expanduser()
    files = PackerFiles(
        template=out / f"{recipe.role}.pkr.hcl",
        user_data=out / recipe.role / "user-data",
        meta_data=out / recipe.role / "meta-data",
    )
    user = cloudinit.user_data(hostname=f"{recipe.role}-build", ssh_public_keys=[public_key])
    meta = cloudinit.meta_data(instance_id=f"ai-how-packer-{recipe.role}", hostname=f"{recipe.role}-build")
    atomic_write_text(files.user_data, cloudinit.dump_cloud_config(user))
    atomic_write_text(files.meta_data, yaml.safe_dump(meta, sort_keys=False))
    atomic_write_text(files.template, render(template_blocks(recipe, private_key), header=_header(recipe)))
    return files
