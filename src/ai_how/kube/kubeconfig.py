"""Merge the cloud cluster's admin kubeconfig into the user's ``~/.kube/config`` (entries by name)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text

_SECTIONS = ("clusters", "users", "contexts")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise AiHowError(
            f"cannot read the kubeconfig {path}: {exc}", fix=f"fix or move {path} away"
        ) from None
    if not isinstance(data, dict):
        raise AiHowError(f"{path} is not a kubeconfig (no mapping)", fix=f"fix or move {path} away")
    return data


def merge_into(source: Path, target: Path) -> Path:
    """Add or replace ``source``'s clusters, users and contexts in ``target`` (same names are replaced);
    the current context becomes ``source``'s when ``target`` has none. ``target`` is backed up first
    (``.bak``) and written atomically with mode 0600 (it holds credentials)."""
    new = _read(source)
    merged: dict[str, Any] = (
        _read(target) if target.is_file() else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    )
    for section in _SECTIONS:
        incoming = {item["name"]: item for item in new.get(section) or []}
        kept = [item for item in merged.get(section) or [] if item.get("name") not in incoming]
        merged[section] = kept + list(incoming.values())
    if not merged.get("current-context") and new.get("current-context"):
        merged["current-context"] = new["current-context"]
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if target.is_file():
        shutil.copy2(target, target.with_name(target.name + ".bak"))
        os.chmod(target.with_name(target.name + ".bak"), 0o600)
    atomic_write_text(target, yaml.safe_dump(merged, sort_keys=False))
    os.chmod(target, 0o600)
    return target
