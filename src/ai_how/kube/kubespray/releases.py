"""The Kubespray releases ai-how knows: each tag's commit and the versions it can install (package data).

Pure data, no backend: config validation reads it to refuse a Kubernetes, containerd or Calico version
the chosen release cannot install before any playbook runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from ai_how.config.models import Kubespray
from ai_how.errors import AiHowError


@dataclass(frozen=True)
class KubesprayRelease:
    version: str
    commit: str
    kubernetes: tuple[str, ...]
    containerd: tuple[str, ...]
    calico: tuple[str, ...]
    defaults: dict[str, str]
    removed_keys: tuple[str, ...]

    def span(self, component: str) -> str:
        """``oldest-newest`` of a component's installable versions, for messages."""
        versions: tuple[str, ...] = getattr(self, component)
        return f"{versions[-1]}-{versions[0]}"


@cache
def known_releases() -> dict[str, KubesprayRelease]:
    found: dict[str, KubesprayRelease] = {}
    for item in resources.files("ai_how.data").joinpath("kubespray").iterdir():
        if not item.name.endswith(".yml"):
            continue
        doc = yaml.safe_load(item.read_text(encoding="utf-8"))
        found[doc["version"]] = KubesprayRelease(
            version=doc["version"],
            commit=doc["commit"],
            kubernetes=tuple(str(v) for v in doc["kubernetes"]),
            containerd=tuple(str(v) for v in doc["containerd"]),
            calico=tuple(str(v) for v in doc["calico"]),
            defaults={k: str(v) for k, v in doc["defaults"].items()},
            removed_keys=tuple(doc.get("removed_keys", [])),
        )
    return found


def release(version: str) -> KubesprayRelease | None:
    return known_releases().get(version)


def resolve_version(requested: str | None, available: tuple[str, ...], default: str) -> str | None:
    """The exact version to install: ``None``/empty → the release's default; ``1.35`` → the newest 1.35.x
    it installs; ``v1.35.4``/``1.35.4`` → itself. None when the release cannot install it."""
    if not requested:
        return default
    wanted = requested.lstrip("v")
    if wanted in available:
        return wanted
    matches = [v for v in available if v.startswith(wanted + ".")]
    return matches[0] if matches else None  # available is newest first


def resolve_pin(pin: Kubespray) -> Kubespray:
    """The config's Kubespray with its commit filled in from the known releases."""
    if pin.commit is not None:
        return pin
    known = release(pin.version)
    if known is None:
        names = ", ".join(sorted(known_releases()))
        raise AiHowError(
            f"clusters.cloud.kubernetes_config.kubespray.version: ai-how does not know Kubespray {pin.version}",
            fix=f"use one of {names}, or set kubespray.commit to the tag's commit",
        )
    return pin.model_copy(update={"commit": known.commit})
