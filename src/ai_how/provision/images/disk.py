"""A disk image's loop device and mounts during a build, each undone on any exit (error or Ctrl-C).

Without udev (containers, minimal hosts) the partition node of a loop device may not appear on its
own; ``partx -a`` then tells the kernel about the partitions.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

from ai_how.errors import AiHowError
from ai_how.provision.images.buildlog import BuildLog

_OCTAL = re.compile(r"\\([0-7]{3})")


def create_partitioned(log: BuildLog, path: Path, size_gib: int) -> None:
    """A sparse raw disk of ``size_gib`` with an MBR table and one bootable Linux partition."""
    with path.open("wb") as handle:
        handle.truncate(size_gib * 1024**3)
    script = path.with_name(path.name + ".sfdisk")
    script.write_text("label: dos\nstart=2048, type=83, bootable\n", encoding="utf-8")
    # sfdisk reads its script from stdin; the shell only redirects it (arguments are passed positionally).
    log.run(
        ["sh", "-c", 'exec sfdisk --quiet "$1" < "$2"', "sfdisk", str(path), str(script)],
        what="partitioning the disk image (sfdisk)",
        timeout_s=60,
    )
    script.unlink()


def _wait_for(node: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not node.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def loop_device(log: BuildLog, image: Path) -> Iterator[tuple[str, str]]:
    """Attach ``image`` to a free loop device; yield (disk, first partition) and detach on exit."""
    lines = log.run(
        ["losetup", "-P", "--show", "-f", str(image)], what="attaching a loop device", timeout_s=60
    )
    disk = next((line.strip() for line in reversed(lines) if line.strip().startswith("/dev/loop")), None)
    if disk is None:
        raise AiHowError("losetup printed no loop device", fix=f"see the build log {log.path}")
    try:
        partition = f"{disk}p1"
        if not _wait_for(Path(partition), 2.0):
            log.run(["partx", "-a", disk], what="adding the loop device's partitions (partx)", check=False)
            if not _wait_for(Path(partition), 5.0):
                raise AiHowError(
                    f"the partition {partition} of {disk} did not appear",
                    fix="load the loop module with partition support (`modprobe loop max_part=8`)",
                )
        yield disk, partition
    finally:
        log.run(["losetup", "-d", disk], what="detaching the loop device", check=False, timeout_s=60)


def mounts_under(target: Path) -> list[Path]:
    """Mount points at or below ``target``, deepest first (the order to unmount them)."""
    found: list[Path] = []
    prefix = str(target).rstrip("/")
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(log: BuildLog, target: Path) -> None:
    """Unmount everything at or below ``target`` (also what an interrupted mmdebstrap left), lazily as a
    last resort so the loop device can still be detached."""
    for point in mounts_under(target):
        log.run(["umount", str(point)], what=f"unmounting {point}", check=False, timeout_s=120)
        if point in mounts_under(target):
            log.run(["umount", "-l", str(point)], what=f"unmounting {point}", check=False, timeout_s=60)


@contextlib.contextmanager
def mounted(log: BuildLog, source: str, target: Path, *options: str) -> Iterator[Path]:
    """``mount [options] source target`` for the duration of the block; everything below is unmounted after."""
    target.mkdir(parents=True, exist_ok=True)
    log.run(["mount", *options, source, str(target)], what=f"mounting {source} on {target}", timeout_s=60)
    try:
        yield target
    finally:
        unmount_all(log, target)


@contextlib.contextmanager
def chroot_mounts(log: BuildLog, root: Path) -> Iterator[None]:
    """/dev, /proc and /sys of the host bind-mounted into ``root`` (grub-install and update-grub need them)."""
    with contextlib.ExitStack() as stack:
        for name in ("dev", "proc", "sys"):
            stack.enter_context(mounted(log, f"/{name}", root / name, "--bind"))
        yield
