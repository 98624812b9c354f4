"""``ai-how image build``: a recipe's bootable qcow2 from Debian packages (mmdebstrap on a loop device).

Steps: partition (sparse raw disk, one bootable partition, ext4 labelled ``rootfs``), mmdebstrap
(minbase plus the recipe's packages), bootloader (fstab, GRUB on the serial console, cloud-init's
datasources, machine identity removed), convert (qcow2). The work happens in a temp dir beside the
output and moves into place only on success; on any failure or Ctrl-C the mounts and the loop
device are undone and the partial files removed. An unchanged recipe is not built again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ai_how import __version__
from ai_how.errors import AiHowError
from ai_how.failpoints import failpoint
from ai_how.provision.images import artifacts, disk, rootfs
from ai_how.provision.images.artifacts import BuiltImage, ImageFiles
from ai_how.provision.images.buildlog import BuildLog
from ai_how.provision.images.recipes import Recipe

Report = Callable[[str], None]

# The host commands a build runs, and the Debian package that has each (GRUB runs inside the image).
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "losetup": "mount",
    "partx": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "chroot": "coreutils",
    "fstrim": "util-linux",
}
STEPS = ("partition", "mmdebstrap", "bootloader", "convert")


def require_root() -> None:
    if os.geteuid() != 0:
        raise AiHowError(
            "image build needs root (loop devices, chroot)",
            fix="run it as root, e.g. `sudo ai-how image build ROLE`, or build with Packer (`ai-how image packer ROLE`)",
        )


def require_tools() -> None:
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        tools = sorted(tool for tool, package in TOOLS.items() if package in missing)
        raise AiHowError(
            f"image build needs {', '.join(tools)}, which are not installed",
            fix=f"run `make setup` or `apt-get install {' '.join(missing)}`",
        )


@contextlib.contextmanager
def _exclusive(role_dir: Path, role: str) -> Iterator[None]:
    """One build per role directory at a time (two would fight over the stable link and the log)."""
    role_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(role_dir / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AiHowError(
                f"another build of {role} is running in {role_dir}", fix="wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def build_image(
    recipe: Recipe, output_dir: Path, *, force: bool = False, report: Report | None = None
) -> BuiltImage:
    """The recipe's image under ``output_dir``: reused when it is up to date (unless ``force``), else built."""
    files = ImageFiles(output_dir.expanduser().resolve(), recipe)
    say = report or (lambda _line: None)
    if not force and (existing := artifacts.current(files)) is not None:
        artifacts.point_link(files)
        return existing
    require_root()
    require_tools()
    with _exclusive(files.role_dir, recipe.role):
        if not force and (existing := artifacts.current(files)) is not None:  # built while we waited
            artifacts.point_link(files)
            return existing
        log = BuildLog(files.log)
        log.start()
        log.note(f"ai-how {__version__} image build {recipe.role}, recipe {recipe.sha256}")
        work = Path(tempfile.mkdtemp(prefix=f".{recipe.name}.", suffix=".build", dir=files.role_dir))
        work.chmod(0o755)  # apt downloads as _apt inside the new root, which must be reachable
        started = time.monotonic()
        try:
            qcow2 = _build_in(work, recipe, log, say)
            say("  checksum and manifest")
            manifest = artifacts.manifest_for(
                files,
                image_sha256=artifacts.sha256_file(qcow2),
                size_bytes=qcow2.stat().st_size,
                built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                build_seconds=time.monotonic() - started,
                builder=f"ai-how {__version__}",
            )
            return artifacts.publish(files, qcow2, manifest)
        except KeyboardInterrupt:
            say(f"interrupted: cleaning up (build log {log.path})")
            raise
        except OSError as exc:
            raise AiHowError(
                f"image build of {recipe.role} failed: {exc}", fix=f"see the build log {log.path}"
            ) from None
        finally:
            disk.unmount_all(log, work)  # nothing should be left; this is the last line of defence
            shutil.rmtree(work, ignore_errors=True)


def _step(say: Report, index: int, detail: str) -> None:
    say(f"[{index + 1}/{len(STEPS)}] {STEPS[index]}: {detail}")


def _build_in(work: Path, recipe: Recipe, log: BuildLog, say: Report) -> Path:
    """Build the recipe's disk in ``work``; return the finished qcow2 there."""
    raw = work / "disk.raw"
    root = work / "root"
    _step(say, 0, f"{recipe.size_gib} GiB raw disk, one bootable ext4 partition labelled {rootfs.ROOT_LABEL}")
    disk.create_partitioned(log, raw, recipe.size_gib)
    with disk.loop_device(log, raw) as (device, partition):
        log.run(["mkfs.ext4", "-q", "-L", rootfs.ROOT_LABEL, partition], what="mkfs.ext4", timeout_s=300)
        with disk.mounted(log, partition, root):
            failpoint("image.mounted")
            _step(say, 1, f"{len(recipe.packages)} packages and their dependencies from {recipe.mirror}")
            _bootstrap(log, recipe, root, say)
            _step(say, 2, "GRUB on the serial console, fstab and cloud-init datasources")
            _bootloader(log, root, device)
            # Blocks freed during the install (apt's downloads) become holes, which the qcow2 leaves out.
            log.run(["fstrim", str(root)], what="fstrim", check=False, timeout_s=300)
    _step(say, 3, "qcow2")
    qcow2 = work / f"{recipe.name}.qcow2"
    log.run(
        ["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], what="qemu-img convert", timeout_s=1800
    )
    raw.unlink()
    return qcow2


def _bootstrap(log: BuildLog, recipe: Recipe, root: Path, say: Report) -> None:
    cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}"]
    if recipe.components != ("main",):
        cmd.append(f"--components={','.join(recipe.components)}")
    cmd += [recipe.suite, str(root), recipe.mirror]

    def progress(line: str) -> None:  # mmdebstrap's own progress lines (apt's output stays in the log)
        if line[:2] in ("I:", "W:", "E:"):
            say(f"    {line if len(line) <= 200 else line[:200] + ' …'}")

    log.run(cmd, what="mmdebstrap", timeout_s=3600, on_line=progress)


def _bootloader(log: BuildLog, root: Path, device: str) -> None:
    rootfs.write_fstab(root)
    rootfs.write_hostname(root)
    rootfs.write_grub_defaults(root)
    rootfs.write_cloud_init_datasources(root)
    selections = rootfs.write_grub_debconf(root)
    with disk.chroot_mounts(log, root):
        log.run(
            ["chroot", str(root), "debconf-set-selections", "/" + str(selections.relative_to(root))],
            what="debconf-set-selections (grub-pc install device)",
            timeout_s=60,
        )
        log.run(
            ["chroot", str(root), "grub-install", "--target=i386-pc", device],
            what="grub-install",
            timeout_s=300,
        )
        log.run(["chroot", str(root), "update-grub"], what="update-grub", timeout_s=300)
    grub_cfg = rootfs.fix_grub_cfg(root)
    if f"root=LABEL={rootfs.ROOT_LABEL}" not in grub_cfg.read_text(encoding="utf-8"):
        raise AiHowError(
            f"update-grub wrote no kernel entry to {grub_cfg.name}", fix=f"see the build log {log.path}"
        )
    if not rootfs.kernels(root):
        raise AiHowError("the image has no kernel in /boot", fix=f"see the build log {log.path}")
    for path in rootfs.generalize(root):
        log.note(f"removed {path.relative_to(root)}")
