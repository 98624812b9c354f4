"""Integrations with tools users bring (Oumi)."""

from pathlib import Path


def oumi_cloud_path() -> Path:
    """The file Oumi imports (via OUMI_EXTRA_DEPS_FILE) to learn the ``ai-how`` cloud."""
    return Path(__file__).with_name("oumi_cloud.py").resolve()
