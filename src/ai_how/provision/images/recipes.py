"""What goes into each base image (role, Debian suite, mirror, packages, size) and its content address.

A recipe's sha256 over its canonical JSON names the built image: an unchanged recipe is not built
again, and any change (a package, the mirror, the size, the build steps' version) makes a new image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from ai_how.errors import AiHowError

# Bump when the build steps change what ends up in an image (the recipe's hash changes with it).
BUILDER_VERSION = 1

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SIZE_GIB = 4  # the raw disk; each VM's overlay grows it (cloud-init growpart)
MIN_SIZE_GIB = 2

# A bootable Debian with cloud-init and SSH from `mmdebstrap --variant=minbase` (measured: 214
# packages, 92 s, ../shared/notes/cloud-side.md); minbase lacks dbus, which hostnamectl needs.
# python3 is there because Ansible configures the nodes.
BOOT_PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-cloud-amd64",
    "grub-pc",
    "cloud-init",
    "cloud-guest-utils",
    "openssh-server",
    "ifupdown",
    "isc-dhcp-client",
    "sudo",
    "netbase",
    "iproute2",
    "qemu-guest-agent",
    "python3",
)
# What a cloud image (Debian's genericcloud, the Packer template's source) already brings its own way.
BOOTLOADER_AND_KERNEL = frozenset({"grub-pc", "linux-image-cloud-amd64"})

ROLE_PACKAGES: dict[str, tuple[str, ...]] = {
    # SLURM controller and compute nodes: the playbook configures them without the Debian archive.
    "hpc-base": ("slurm-wlm", "slurm-client", "munge", "nfs-common", "nfs-kernel-server"),
    # Kubernetes nodes: what kubeadm/Kubespray's preflight checks and kube-proxy need, and apt over https.
    "cloud-base": (
        "conntrack",
        "socat",
        "ipset",
        "ebtables",
        "nfs-common",
        "curl",
        "gnupg",
        "apt-transport-https",
        "ca-certificates",
    ),
}
# What building NVIDIA's kernel module needs; the driver itself is installed once the VM has network.
GPU_PACKAGES = ("linux-headers-cloud-amd64", "dkms", "build-essential")
GPU_COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
GPU_SUFFIX = "-gpu"

ROLES: tuple[str, ...] = tuple(name for base in ROLE_PACKAGES for name in (base, base + GPU_SUFFIX))

# Files that make one machine unique: removed from every image so each VM gets its own
# (cloud-init regenerates the SSH host keys; the SLURM playbook writes the cluster's munge key).
IDENTITY_FILES = (
    "etc/ssh/ssh_host_*_key",
    "etc/ssh/ssh_host_*_key.pub",
    "etc/munge/munge.key",
    "var/lib/dbus/machine-id",
)
MACHINE_ID = "etc/machine-id"  # emptied, not removed: systemd then treats the next boot as the first
# Copied from the build host by mmdebstrap: emptied (DHCP or cloud-init's network config fills it).
RESOLV_CONF = "etc/resolv.conf"


@dataclass(frozen=True)
class Recipe:
    role: str
    suite: str
    mirror: str
    components: tuple[str, ...]
    packages: tuple[str, ...]
    size_gib: int
    builder_version: int

    @property
    def gpu(self) -> bool:
        return self.role.endswith(GPU_SUFFIX)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["components"] = list(self.components)
        data["packages"] = list(self.packages)
        return data

    @property
    def sha256(self) -> str:
        """The content address: sha256 of the recipe's canonical JSON (sorted keys, no spaces)."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def name(self) -> str:
        """The versioned file stem: ``<role>-<hash12>``."""
        return f"{self.role}-{self.short_hash}"

    @property
    def extra_packages(self) -> tuple[str, ...]:
        """The packages a cloud image does not already boot with (what the Packer template installs)."""
        return tuple(p for p in self.packages if p not in BOOTLOADER_AND_KERNEL)


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AiHowError(f"unknown image role {role!r}", fix=f"use one of: {', '.join(ROLES)}")
    return role


def check_mirror(mirror: str) -> str:
    url = urlparse(mirror)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise AiHowError(
            f"--mirror {mirror!r} is not an http(s) URL of a Debian archive",
            fix=f"pass e.g. {DEFAULT_MIRROR} or a local apt cache such as http://127.0.0.1:3142/debian",
        )
    return mirror.rstrip("/")


def recipe_for(role: str, *, mirror: str = DEFAULT_MIRROR, size_gib: int = DEFAULT_SIZE_GIB) -> Recipe:
    """The recipe of ``role`` (``hpc-base``, ``cloud-base`` or their ``-gpu`` variants)."""
    check_role(role)
    if size_gib < MIN_SIZE_GIB:
        raise AiHowError(
            f"--size {size_gib} GiB is too small for a base image", fix=f"use at least {MIN_SIZE_GIB} GiB"
        )
    gpu = role.endswith(GPU_SUFFIX)
    base = role.removesuffix(GPU_SUFFIX)
    packages = BOOT_PACKAGES + ROLE_PACKAGES[base] + (GPU_PACKAGES if gpu else ())
    return Recipe(
        role=role,
        suite=SUITE,
        mirror=check_mirror(mirror),
        components=GPU_COMPONENTS if gpu else ("main",),
        packages=_unique(packages),
        size_gib=size_gib,
        builder_version=BUILDER_VERSION,
    )
