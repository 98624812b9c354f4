"""Built images on disk: ``DIR/<role>/<role>-<hash12>.{qcow2,json,log}`` and the stable link ``<role>.qcow2``.

The manifest is written after the qcow2 is in place, so a manifest whose recipe hash and size match
means a complete image: the recipe is up to date and is not built again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.fsutil import atomic_write_text
from ai_how.provision.images.recipes import Recipe

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ImageFiles:
    """Where one recipe's image, manifest and log live under the output directory."""

    output_dir: Path
    recipe: Recipe

    @property
    def role_dir(self) -> Path:
        return self.output_dir / self.recipe.role

    @property
    def image(self) -> Path:
        return self.role_dir / f"{self.recipe.name}.qcow2"

    @property
    def manifest(self) -> Path:
        return self.role_dir / f"{self.recipe.name}.json"

    @property
    def log(self) -> Path:
        return self.role_dir / f"{self.recipe.name}.log"

    @property
    def link(self) -> Path:
        """The stable name VMs use: always the role's current image."""
        return self.role_dir / f"{self.recipe.role}.qcow2"


@dataclass(frozen=True)
class BuiltImage:
    role: str
    path: Path
    link: Path
    manifest: Path
    log: Path
    recipe_sha256: str
    image_sha256: str
    size_bytes: int
    build_seconds: float
    up_to_date: bool  # True when an existing image was reused, not built

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "path": str(self.path),
            "link": str(self.link),
            "manifest": str(self.manifest),
            "log": str(self.log),
            "recipe_sha256": self.recipe_sha256,
            "image_sha256": self.image_sha256,
            "size_bytes": self.size_bytes,
            "build_seconds": self.build_seconds,
            "up_to_date": self.up_to_date,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest's content, None when it is missing or unreadable (then the image is rebuilt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_for(
    files: ImageFiles,
    *,
    image_sha256: str,
    size_bytes: int,
    built_at: str,
    build_seconds: float,
    builder: str,
) -> dict[str, Any]:
    recipe = files.recipe
    return {
        "format": MANIFEST_FORMAT,
        "role": recipe.role,
        "recipe_sha256": recipe.sha256,
        "recipe": recipe.as_dict(),
        "image": files.image.name,
        "image_sha256": image_sha256,
        "size_bytes": size_bytes,
        "virtual_size_bytes": recipe.size_gib * 1024**3,
        "built_at": built_at,
        "build_seconds": round(build_seconds, 1),
        "log": files.log.name,
        "builder": builder,
    }


def _built(files: ImageFiles, manifest: dict[str, Any], *, up_to_date: bool) -> BuiltImage:
    return BuiltImage(
        role=files.recipe.role,
        path=files.image,
        link=files.link,
        manifest=files.manifest,
        log=files.log,
        recipe_sha256=str(manifest["recipe_sha256"]),
        image_sha256=str(manifest["image_sha256"]),
        size_bytes=int(manifest["size_bytes"]),
        build_seconds=float(manifest.get("build_seconds", 0.0)),
        up_to_date=up_to_date,
    )


def current(files: ImageFiles) -> BuiltImage | None:
    """The recipe's image if it was built completely (manifest with this recipe's hash, qcow2 of that size)."""
    manifest = read_manifest(files.manifest)
    if manifest is None or manifest.get("recipe_sha256") != files.recipe.sha256:
        return None
    try:
        size = files.image.stat().st_size
    except FileNotFoundError:
        return None
    if size != manifest.get("size_bytes") or not isinstance(manifest.get("image_sha256"), str):
        return None
    return _built(files, manifest, up_to_date=True)


def point_link(files: ImageFiles) -> None:
    """Point ``<role>.qcow2`` at this recipe's image, atomically (symlink to a temp name, then rename)."""
    tmp = files.role_dir / f".{files.link.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(files.image.name, tmp)  # relative: the directory can move
    os.replace(tmp, files.link)


def publish(files: ImageFiles, built_qcow2: Path, manifest: dict[str, Any]) -> BuiltImage:
    """Move a finished qcow2 into place, then write its manifest, then point the stable link at it."""
    os.replace(built_qcow2, files.image)
    atomic_write_text(files.manifest, json.dumps(manifest, indent=2) + "\n")
    point_link(files)
    return _built(files, manifest, up_to_date=False)
