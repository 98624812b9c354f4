"""The files a freshly bootstrapped root filesystem gets before it becomes a VM image.

Plain file edits on a directory (no chroot, no root needed), so they are tested on a temp dir:
fstab by label, GRUB on the serial console, cloud-init's datasources, and the removal of what
makes one machine unique.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ai_how.provision.images.recipes import IDENTITY_FILES, MACHINE_ID, RESOLV_CONF

ROOT_LABEL = "rootfs"
# Kernel and GRUB on the first serial port too: a TCG boot logs to libvirt's serial file.
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200n8"
DATASOURCES = ["NoCloud", "ConfigDrive", "None"]
# The disk the VMs see (virtio-blk): grub-pc's upgrades inside a VM reinstall GRUB there.
VM_BOOT_DISK = "/dev/vda"

_GRUB_DEFAULTS = {
    "GRUB_TIMEOUT": "1",
    "GRUB_CMDLINE_LINUX_DEFAULT": "",
    "GRUB_CMDLINE_LINUX": KERNEL_CMDLINE,
    "GRUB_TERMINAL": "console serial",
    "GRUB_SERIAL_COMMAND": "serial --unit=0 --speed=115200",
    "GRUB_DISABLE_OS_PROBER": "true",
}
# update-grub in a chroot records the build's loop device (root=/dev/loop0p1) or its UUID.
_LINUX_ROOT = re.compile(r"^(\s*linux\s.*?\s)root=\S+", re.MULTILINE)


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_fstab(root: Path) -> None:
    _write(root, "etc/fstab", f"LABEL={ROOT_LABEL} / ext4 errors=remount-ro 0 1\n")


def write_grub_defaults(root: Path) -> None:
    """/etc/default/grub.d/ai-how.cfg, which update-grub reads after /etc/default/grub."""
    lines = [f'{key}="{value}"' for key, value in _GRUB_DEFAULTS.items()]
    _write(
        root, "etc/default/grub.d/ai-how.cfg", "# written by ai-how image build\n" + "\n".join(lines) + "\n"
    )


def write_grub_debconf(root: Path) -> Path:
    """A debconf selections file (for ``debconf-set-selections`` in the chroot) naming the VM's boot disk."""
    return _write(root, "tmp/ai-how.debconf", f"grub-pc grub-pc/install_devices multiselect {VM_BOOT_DISK}\n")


def write_cloud_init_datasources(root: Path) -> None:
    doc = yaml.safe_dump({"datasource_list": DATASOURCES}, default_flow_style=None, sort_keys=False)
    _write(root, "etc/cloud/cloud.cfg.d/90_ai_how_datasources.cfg", doc)


def write_hostname(root: Path) -> None:
    """A neutral name until cloud-init sets the VM's own (not the build host's)."""
    _write(root, "etc/hostname", "debian\n")


def rewrite_grub_root(text: str) -> str:
    """Every kernel line of a grub.cfg boots ``root=LABEL=rootfs`` (the label survives the move to a VM)."""
    return _LINUX_ROOT.sub(rf"\1root=LABEL={ROOT_LABEL}", text)


def fix_grub_cfg(root: Path) -> Path:
    path = root / "boot" / "grub" / "grub.cfg"
    path.write_text(rewrite_grub_root(path.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def kernels(root: Path) -> list[Path]:
    return sorted((root / "boot").glob("vmlinuz-*"))


def generalize(root: Path) -> list[Path]:
    """Remove the files that make one machine unique, empty machine-id and the build host's resolv.conf;
    return what was removed."""
    removed: list[Path] = []
    for pattern in IDENTITY_FILES:
        for path in sorted(root.glob(pattern)):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
    for emptied in (MACHINE_ID, RESOLV_CONF):
        path = root / emptied
        if path.is_file() and not path.is_symlink():
            path.write_text("", encoding="utf-8")
    (root / "tmp" / "ai-how.debconf").unlink(missing_ok=True)
    return removed
