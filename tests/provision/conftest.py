"""Fixtures of the VM tests: the real ``hpc-base`` image, built once and kept between test runs.

The image lives in ``$AI_HOW_TEST_IMAGE_CACHE`` (default /var/tmp/ai-how-images) under its recipe's
content address, so a later run (or session) reuses it without root or network; only a changed
recipe builds again (~2-3 minutes, root and the Debian archive needed).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ai_how.provision.images.artifacts import BuiltImage, ImageFiles, current
from ai_how.provision.images.build import build_image
from ai_how.provision.images.recipes import recipe_for

CACHE_ENV = "AI_HOW_TEST_IMAGE_CACHE"
DEFAULT_CACHE = Path("/var/tmp/ai-how-images")


def image_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def archive_unreachable(mirror: str, suite: str) -> str | None:
    """Why the Debian archive cannot be used (None when its Release file answers)."""
    url = f"{mirror}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"the Debian archive is unreachable ({url}: {exc})"
    return None


@pytest.fixture(scope="session")
def hpc_base_image() -> BuiltImage:
    """The ``hpc-base`` qcow2 (``.path``; ``.link`` is the stable name), built on first use."""
    recipe = recipe_for("hpc-base")
    cache = image_cache()
    if current(ImageFiles(cache.resolve(), recipe)) is None:
        if os.geteuid() != 0:
            pytest.skip(
                f"building the hpc-base image needs root (loop devices, chroot); none cached in {cache}"
            )
        reason = archive_unreachable(recipe.mirror, recipe.suite)
        if reason is not None:
            pytest.skip(f"cannot build the hpc-base image: {reason}")
    return build_image(recipe, cache)
