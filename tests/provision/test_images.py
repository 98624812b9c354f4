"""Base images: recipes and their content address, the Packer template, the CLI, and the real build.

The fast tests run the real tools (packer validate, cloud-init schema, the CLI as a process); the
slow one checks the real ``hpc-base`` image built by the ``hpc_base_image`` fixture, mounted
read-only from a raw copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_how.provision.images import artifacts, disk, rootfs
from ai_how.provision.images.artifacts import BuiltImage, ImageFiles
from ai_how.provision.images.build import build_image
from ai_how.provision.images.hcl import Expr, quote
from ai_how.provision.images.packer import write_packer
from ai_how.provision.images.recipes import ROLES, recipe_for
from tests.services import AI_HOW

FAKE_SHA512 = "sha512:" + "0" * 128  # packer validate would otherwise download SHA512SUMS
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mount)")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AI_HOW, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


# --------------------------------------------------------------------------- recipes


def test_recipe_hash_is_stable_and_follows_every_input() -> None:
    base = recipe_for("hpc-base")
    assert base.sha256 == recipe_for("hpc-base").sha256 and len(base.short_hash) == 12
    changed = [
        dataclasses.replace(base, packages=(*base.packages, "htop")),
        recipe_for("hpc-base", mirror="http://127.0.0.1:3142/debian"),
        recipe_for("hpc-base", size_gib=8),
        dataclasses.replace(base, builder_version=base.builder_version + 1),
        recipe_for("hpc-base-gpu"),
    ]
    hashes = {r.sha256 for r in changed}
    assert base.sha256 not in hashes and len(hashes) == len(changed)
    assert recipe_for("hpc-base", mirror="http://deb.debian.org/debian/").sha256 == base.sha256


def test_each_role_has_what_it_needs() -> None:
    for role in ROLES:
        packages = set(recipe_for(role).packages)
        # Ansible (python3), first boot (cloud-init), access (openssh-server), a kernel and a bootloader
        assert {
            "python3",
            "cloud-init",
            "openssh-server",
            "linux-image-cloud-amd64",
            "grub-pc",
            "dbus",
        } <= packages
    assert {"slurm-wlm", "slurm-client", "munge", "nfs-common", "nfs-kernel-server"} <= set(
        recipe_for("hpc-base").packages
    )
    assert {"conntrack", "socat", "ipset", "ebtables", "ca-certificates"} <= set(
        recipe_for("cloud-base").packages
    )
    assert "slurm-wlm" not in recipe_for("cloud-base").packages
    for base in ("hpc-base", "cloud-base"):
        plain, gpu = recipe_for(base), recipe_for(base + "-gpu")
        assert set(gpu.packages) - set(plain.packages) == {
            "linux-headers-cloud-amd64",
            "dkms",
            "build-essential",
        }
        assert plain.components == ("main",) and {"contrib", "non-free", "non-free-firmware"} <= set(
            gpu.components
        )
        assert "nvidia-driver" not in gpu.packages


def test_bad_recipe_inputs_are_one_line_errors(tmp_path: Path) -> None:
    for args, words in (
        (["image", "build", "nope"], ["unknown image role 'nope'", *ROLES]),
        (["image", "packer", "nope"], ["unknown image role 'nope'", *ROLES]),
        (["image", "build", "hpc-base", "--mirror", "deb.debian.org"], ["--mirror", "http"]),
        (["image", "build", "hpc-base", "--size", "1"], ["--size 1", "at least"]),
    ):
        result = _cli(*args, "-o", str(tmp_path / "out"))
        assert result.returncode == 1, result.stderr
        assert all(word in result.stderr for word in words), result.stderr
        assert "Traceback" not in result.stderr and result.stderr.startswith("error:")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- cache


def _fake_image(output: Path, role: str = "hpc-base") -> ImageFiles:
    """A manifest and a qcow2 of the recipe's name, as a finished build leaves them."""
    files = ImageFiles(output.resolve(), recipe_for(role))
    files.role_dir.mkdir(parents=True)
    files.image.write_bytes(b"not really a qcow2")
    manifest = artifacts.manifest_for(
        files,
        image_sha256=artifacts.sha256_file(files.image),
        size_bytes=files.image.stat().st_size,
        built_at="2026-01-01T00:00:00+0000",
        build_seconds=1.0,
        builder="test",
    )
    files.manifest.write_text(json.dumps(manifest))
    return files


def test_an_up_to_date_image_is_not_rebuilt(tmp_path: Path) -> None:
    files = _fake_image(tmp_path / "images")
    # No build tool is on PATH: a rebuild attempt would fail, so success means nothing was built.
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    result = _cli("image", "build", "hpc-base", "-o", str(tmp_path / "images"), env=env)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr and result.stdout.strip() == str(files.image)
    assert files.image.read_bytes() == b"not really a qcow2"
    assert files.link.is_symlink() and files.link.resolve() == files.image
    as_json = json.loads(
        _cli("image", "build", "hpc-base", "-o", str(tmp_path / "images"), "--json", env=env).stdout
    )
    assert as_json["up_to_date"] is True and as_json["recipe_sha256"] == files.recipe.sha256
    # A changed recipe (another mirror) is a different image: this one does not count as built.
    other = _cli(
        "image",
        "build",
        "hpc-base",
        "-o",
        str(tmp_path / "images"),
        "--mirror",
        "http://127.0.0.1:1/debian",
        env=env,
    )
    assert other.returncode == 1 and "up to date" not in other.stderr
    assert ("needs root" in other.stderr) or (
        "mmdebstrap" in other.stderr and "apt-get install" in other.stderr
    )
    assert "Traceback" not in other.stderr


def test_an_incomplete_image_is_not_taken_as_built(tmp_path: Path) -> None:
    files = _fake_image(tmp_path / "images")
    files.image.write_bytes(b"truncated")  # another size than the manifest records
    assert artifacts.current(files) is None
    files.image.unlink()
    assert artifacts.current(files) is None


def test_without_root_the_build_says_so(tmp_path: Path) -> None:
    setpriv = [] if os.geteuid() != 0 else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    output = tmp_path / "out"
    output.mkdir()
    output.chmod(0o777)
    result = subprocess.run(
        [*setpriv, AI_HOW, "image", "build", "cloud-base", "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "image build needs root (loop devices, chroot)" in result.stderr and "fix:" in result.stderr


@needs_root
def test_a_failed_build_leaves_no_loop_device_mount_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_how.failpoints import FailpointError

    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed")
    output = tmp_path / "images"
    monkeypatch.setenv("AI_HOW_FAILPOINTS", "image.mounted=1:raise")  # once the partition is mounted
    with pytest.raises(FailpointError):
        build_image(recipe_for("hpc-base"), output)
    files = ImageFiles(output.resolve(), recipe_for("hpc-base"))
    assert disk.mounts_under(output.resolve()) == []
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(output.resolve()) not in attached
    left = sorted(p.name for p in files.role_dir.iterdir())
    assert left == [".build.lock", files.log.name], left  # the log stays for the error message
    assert "mkfs.ext4" in files.log.read_text()


# --------------------------------------------------------------------------- root file system edits


GRUB_CFG = """\
insmod part_msdos
set root='hd0,msdos1'
menuentry 'Debian GNU/Linux' {
        linux   /boot/vmlinuz-6.1.0-41-cloud-amd64 root=/dev/loop0p1 ro console=tty0 console=ttyS0,115200n8
        initrd  /boot/initrd.img-6.1.0-41-cloud-amd64
}
        linux   /boot/vmlinuz-6.1.0-41-cloud-amd64 root=UUID=0a1b ro single
"""


def test_grub_cfg_boots_by_label_and_keeps_grubs_own_root() -> None:
    fixed = rootfs.rewrite_grub_root(GRUB_CFG)
    assert "set root='hd0,msdos1'" in fixed
    assert "root=/dev/loop" not in fixed and "root=UUID" not in fixed
    assert fixed.count("root=LABEL=rootfs ro") == 2


def test_generalize_removes_machine_identity(tmp_path: Path) -> None:
    for name in (
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "etc/munge/munge.key",
        "etc/ssh/sshd_config",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef\n")
    (tmp_path / "etc/resolv.conf").write_text("nameserver 10.255.255.53\n")  # the build host's
    rootfs.generalize(tmp_path)
    assert (tmp_path / "etc/resolv.conf").read_text() == ""
    assert sorted(p.name for p in (tmp_path / "etc/ssh").iterdir()) == ["sshd_config"]
    assert not (tmp_path / "etc/munge/munge.key").exists()
    assert (tmp_path / "etc/machine-id").read_text() == ""


# --------------------------------------------------------------------------- packer


def test_hcl_strings_are_not_interpolated_unless_asked() -> None:
    assert quote('echo "${HOME}" %{x}') == r'"echo \"$${HOME}\" %%{x}"'
    assert Expr.template("${path.root}/a").text == '"${path.root}/a"'


def _validate(template: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["packer", "validate", "-var", f"debian_image_checksum={FAKE_SHA512}", *extra, str(template)],
        capture_output=True,
        text=True,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        cwd="/",  # the template finds its files from its own directory, not the caller's
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed (`make setup`)")
@pytest.mark.parametrize("role", ROLES)
def test_packer_template_validates(role: str, tmp_path: Path, ssh_key: Path) -> None:
    result = _cli(
        "image", "packer", role, "-o", str(tmp_path / "packer"), "--ssh-key", str(ssh_key), "--json"
    )
    assert result.returncode == 0, result.stderr
    files = {k: Path(v) for k, v in json.loads(result.stdout).items()}
    assert files["template"] == tmp_path / "packer" / f"{role}.pkr.hcl"
    checked = _validate(files["template"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = files["template"].read_text()
    recipe = recipe_for(role)
    assert f'source "qemu" "{role}"' in text and 'accelerator          = "kvm"' in text
    assert " ".join(recipe.extra_packages) in text and "grub-pc" not in text
    assert ("non-free-firmware" in text) == recipe.gpu
    assert f"build/packer/{role}" in text and "password" not in text
    assert ssh_key.with_suffix(".pub").read_text().split()[1] in files["user_data"].read_text()
    # packer validate checks the seed files exist: a template without them is refused
    files["user_data"].unlink()
    assert _validate(files["template"]).returncode != 0


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed (`make setup`)")
def test_packer_user_data_passes_cloud_init_schema(tmp_path: Path, ssh_key: Path) -> None:
    files = write_packer(recipe_for("cloud-base-gpu"), tmp_path, ssh_key=ssh_key)

    def schema(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = schema(files.user_data)
    assert ok.returncode == 0 and "Valid cloud-config" in ok.stdout, ok.stdout + ok.stderr
    broken = tmp_path / "broken"
    broken.write_text(files.user_data.read_text().replace("ssh_pwauth: false", "ssh_pwauth: [1]"))
    assert schema(broken).returncode != 0


def test_packer_needs_a_key_pair(tmp_path: Path, ssh_key: Path) -> None:
    missing = _cli("image", "packer", "hpc-base", "-o", str(tmp_path), "--ssh-key", str(tmp_path / "nokey"))
    assert (
        missing.returncode == 1 and "no such private key" in missing.stderr and "ssh-keygen" in missing.stderr
    )
    public = _cli("image", "packer", "hpc-base", "-o", str(tmp_path), "--ssh-key", f"{ssh_key}.pub")
    assert public.returncode == 1 and "is a public key" in public.stderr


# --------------------------------------------------------------------------- the real image (slow)


@contextlib.contextmanager
def _mounted_read_only(image: Path, work: Path) -> Iterator[Path]:
    """The image's root file system, mounted read-only from a raw copy (the qcow2 stays untouched)."""
    raw = work / "copy.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True, timeout=600)
    device = subprocess.run(
        ["losetup", "-P", "-r", "--show", "-f", str(raw)], capture_output=True, text=True, check=True
    ).stdout.strip()
    root = work / "root"
    root.mkdir()
    try:
        partition = Path(f"{device}p1")
        if not partition.exists():
            subprocess.run(["partx", "-a", device], check=False)
        subprocess.run(["mount", "-o", "ro", str(partition), str(root)], check=True, timeout=60)
        try:
            yield root
        finally:
            subprocess.run(["umount", str(root)], check=True, timeout=60)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def _installed(root: Path) -> set[str]:
    status = (root / "var/lib/dpkg/status").read_text()
    return {
        m.group(1)
        for m in re.finditer(r"^Package: (\S+)\n(?:.+\n)*?Status: install ok installed$", status, re.M)
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_root
def test_the_hpc_base_image_boots_by_label_with_cloud_init_and_slurm(
    hpc_base_image: BuiltImage, tmp_path: Path
) -> None:
    image = hpc_base_image.path
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == 4 * 1024**3
    manifest = json.loads(hpc_base_image.manifest.read_text())
    assert manifest["image_sha256"] == artifacts.sha256_file(image) == hpc_base_image.image_sha256
    assert manifest["recipe_sha256"] == recipe_for("hpc-base").sha256
    assert hpc_base_image.link.resolve() == image
    assert "mmdebstrap" in hpc_base_image.log.read_text()

    with _mounted_read_only(image, tmp_path) as root:
        assert rootfs.kernels(root), "no kernel in /boot"
        grub = (root / "boot/grub/grub.cfg").read_text()
        assert "root=LABEL=rootfs" in grub and "root=/dev/loop" not in grub and "console=ttyS0" in grub
        assert (root / "boot/grub/i386-pc/core.img").exists()
        assert (root / "etc/fstab").read_text().startswith("LABEL=rootfs / ext4")
        datasources = (root / "etc/cloud/cloud.cfg.d/90_ai_how_datasources.cfg").read_text()
        assert "NoCloud" in datasources and "ConfigDrive" in datasources
        installed = _installed(root)
        for package in (
            "cloud-init",
            "openssh-server",
            "slurmd",
            "slurmctld",
            "munge",
            "python3",
            "nfs-kernel-server",
        ):
            assert package in installed, package
        assert not list((root / "etc/ssh").glob("ssh_host_*")) and not (root / "etc/munge/munge.key").exists()
        assert (root / "etc/machine-id").read_text() == "" and (root / "etc/resolv.conf").read_text() == ""

    again = build_image(recipe_for("hpc-base"), hpc_base_image.path.parent.parent)
    assert again.up_to_date and again.path == image
